package deploycheck

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

var renderedDir = flag.String("rendered", "", "directory of `helm template` outputs, one <value set>.yaml per helm/llm-proxy/ci/<value set>-values.yaml (written by .ci/deploy-check)")

const chartDir = "../../../helm/llm-proxy"

// valueSet is what one CI value set must render to.
type valueSet struct {
	name     string
	sqlite   bool
	replicas int32 // when not autoscaled
	hpa      bool
	pdb      bool
	redis    bool
	otel     string // OTEL_SERVICE_NAME; "" means tracing off
	poolSize string
	external []string // Secrets the release reads but does not create
	// metrics: METRICS_TOKEN comes from a Secret; trusted: TRUSTED_PROXIES.
	metrics bool
	trusted string
}

var valueSets = []valueSet{
	{name: "default", sqlite: true, replicas: 1, pdb: true, poolSize: "5"},
	{name: "postgres-redis-hpa", hpa: true, pdb: true, redis: true, poolSize: "10", metrics: true, trusted: "10.0.0.0/8,fd00::/8"},
	{
		name: "existing-secrets-otel", replicas: 2, redis: true, otel: "llm-proxy-ci", poolSize: "5",
		external: []string{"llm-proxy-credentials", "llm-proxy-database", "llm-proxy-redis"},
	},
}

// TestValueSetsMatchChart keeps the expectations above and the chart's
// ci/ value files in step, with or without a rendered directory.
func TestValueSetsMatchChart(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, f := range files {
		got = append(got, strings.TrimSuffix(filepath.Base(f), "-values.yaml"))
	}
	for _, vs := range valueSets {
		want = append(want, vs.name)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("helm/llm-proxy/ci value sets = %v, expectations in chart_test.go = %v", got, want)
	}
}

func TestChartRendered(t *testing.T) {
	if *renderedDir == "" {
		t.Skip("no -rendered directory: run .ci/deploy-check to render and check the chart")
	}
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			path := filepath.Join(*renderedDir, vs.name+".yaml")
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("rendered value set missing: %v", err)
			}
			b, err := decodeFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkRelease(t, b, vs)
		})
	}
}

const (
	hookAnnotation   = "helm.sh/hook"
	deletePolicy     = "helm.sh/hook-delete-policy"
	migrationHook    = "pre-install,pre-upgrade"
	beforeHookCreate = "before-hook-creation"
)

// checkRelease checks one rendered release against its value set.
func checkRelease(t *testing.T, b bundle, vs valueSet) {
	t.Helper()
	var release, hooks bundle
	for _, o := range b {
		if o.meta.Annotations[hookAnnotation] == "" {
			release = append(release, o)
		} else {
			hooks = append(hooks, o)
		}
	}

	d, env := checkProxyDeployment(t, release)
	pod := d.Spec.Template.Spec
	for _, a := range []string{"checksum/config", "checksum/secret"} {
		if d.Spec.Template.Annotations[a] == "" {
			t.Errorf("pod template lacks the %s annotation that rolls pods on a change", a)
		}
	}
	if vs.hpa {
		if d.Spec.Replicas != nil {
			t.Errorf("with an HPA the Deployment must leave replicas unset, got %d", *d.Spec.Replicas)
		}
	} else if d.Spec.Replicas == nil || *d.Spec.Replicas != vs.replicas {
		t.Errorf("Deployment replicas = %v, want %d", d.Spec.Replicas, vs.replicas)
	}
	if n := len(release.all("HorizontalPodAutoscaler")); (n == 1) != vs.hpa || n > 1 {
		t.Errorf("%d HPAs rendered, want HPA %v", n, vs.hpa)
	}
	if n := len(release.all("PodDisruptionBudget")); (n == 1) != vs.pdb || n > 1 {
		t.Errorf("%d PDBs rendered, want PDB %v", n, vs.pdb)
	}

	jobs := hooks.all("Job")
	if vs.sqlite {
		if len(jobs) != 0 {
			t.Errorf("SQLite renders no migration Job (the volume is the pod's), got %d", len(jobs))
		}
		wantEnv(t, env, "DATABASE_AUTO_MIGRATE", "true")
		if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("SQLite Deployment strategy = %q, want Recreate (one process per database file)", d.Spec.Strategy.Type)
		}
		if v := env["DATABASE_URL"]; !strings.HasPrefix(v.value, "sqlite:////app/var/") {
			t.Errorf("SQLite DATABASE_URL = %q, want a file under the /app/var volume", v.value)
		}
	} else {
		if len(jobs) != 1 {
			t.Fatalf("want one migration hook Job, got %d", len(jobs))
		}
		job := jobs[0].obj.(*batchv1.Job)
		if got := job.Annotations[hookAnnotation]; got != migrationHook {
			t.Errorf("Job %s: %s = %q, want %q", job.Name, hookAnnotation, got, migrationHook)
		}
		if got := job.Annotations[deletePolicy]; got != beforeHookCreate {
			t.Errorf("Job %s: %s = %q, want %q", job.Name, deletePolicy, got, beforeHookCreate)
		}
		checkMigrationJob(t, hooks, job)
		wantEnv(t, env, "DATABASE_AUTO_MIGRATE", "false")
		wantSecretEnv(t, env, "DATABASE_URL")
		wantSecretEnv(t, env, "ENCRYPTION_KEY")
		if d.Spec.Template.Spec.Containers[0].Image != job.Spec.Template.Spec.Containers[0].Image {
			t.Errorf("migration Job and proxy run different images")
		}
		// Hooks run before the release's own objects exist.
		checkRefs(t, hooks, vs.external, job.Name, job.Spec.Template.Spec)
		if sa := job.Spec.Template.Spec.ServiceAccountName; sa != "" {
			t.Errorf("Job %s runs as ServiceAccount %q, which does not exist yet when pre-install hooks run", job.Name, sa)
		}
	}
	checkRefs(t, release, vs.external, d.Name, pod)
	if sa := pod.ServiceAccountName; sa != "" {
		if _, ok := release.find("ServiceAccount", sa); !ok {
			t.Errorf("Deployment runs as ServiceAccount %q, which is not rendered", sa)
		}
	}
	for _, v := range pod.Volumes {
		if v.PersistentVolumeClaim != nil {
			if _, ok := release.find("PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName); !ok {
				t.Errorf("volume %s claims %q, which is not rendered", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}

	if _, ok := env["REDIS_URL"]; ok != vs.redis {
		t.Errorf("REDIS_URL set = %v, want %v", ok, vs.redis)
	}
	if vs.redis {
		wantSecretEnv(t, env, "REDIS_URL")
	}
	if vs.otel != "" {
		wantEnv(t, env, "OTEL_SERVICE_NAME", vs.otel)
	}
	if vs.metrics {
		wantSecretEnv(t, env, "METRICS_TOKEN")
	}
	if v, ok := env["TRUSTED_PROXIES"]; ok != (vs.trusted != "") || v.value != vs.trusted {
		t.Errorf("TRUSTED_PROXIES = %q (set %v), want %q", v.value, ok, vs.trusted)
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"} {
		if _, ok := env[name]; ok != (vs.otel != "") {
			t.Errorf("%s set = %v, want tracing %v", name, ok, vs.otel != "")
		}
	}
	wantEnv(t, env, "DATABASE_POOL_SIZE", vs.poolSize)
	for _, name := range []string{"DATABASE_MAX_OVERFLOW", "DATABASE_POOL_TIMEOUT"} {
		if v, ok := env[name]; !ok || v.value == "" {
			t.Errorf("%s is not set from values", name)
		}
	}
	checkHelmTest(t, hooks)
	checkSelectorsExclusive(t, b)
}

// checkRefs checks that a pod spec reads only Secrets and ConfigMaps of the
// given bundle or the value set's external Secrets.
func checkRefs(t *testing.T, b bundle, external []string, owner string, spec corev1.PodSpec) {
	t.Helper()
	for _, name := range secretRefs(spec) {
		if _, ok := b.find("Secret", name); !ok && !slices.Contains(external, name) {
			t.Errorf("%s reads Secret %q, which is neither rendered alongside it nor an existing Secret of the value set", owner, name)
		}
	}
	for _, name := range configMapRefs(spec) {
		if _, ok := b.find("ConfigMap", name); !ok {
			t.Errorf("%s reads ConfigMap %q, which is not rendered alongside it", owner, name)
		}
	}
}

// checkHelmTest checks for the `helm test` pod that calls /readyz.
func checkHelmTest(t *testing.T, hooks bundle) {
	t.Helper()
	var found bool
	for _, o := range hooks.all("Pod") {
		if o.meta.Annotations[hookAnnotation] != "test" {
			continue
		}
		p := o.obj.(*corev1.Pod)
		if len(p.Spec.Containers) == 1 && strings.Contains(commandLine(p.Spec.Containers[0]), "/readyz") &&
			p.Spec.RestartPolicy == corev1.RestartPolicyNever {
			found = true
		}
	}
	if !found {
		t.Error("no `helm test` pod (hook test, restartPolicy Never) calling /readyz")
	}
}
