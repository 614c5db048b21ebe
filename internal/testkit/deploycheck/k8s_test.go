package deploycheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const k8sDir = "../../../k8s"

// kustomization is the part of kustomize's Kustomization that k8s/ uses;
// decoding into it strictly catches a misspelt field there too.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images"`
}

// loadK8s strictly decodes every manifest listed in k8s/kustomization.yaml
// and checks that the list names exactly the YAML files in k8s/.
func loadK8s(t *testing.T) (bundle, kustomization) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var k kustomization
	strict, err := kjson.UnmarshalStrict(j, &k, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil || len(strict) > 0 {
		t.Fatalf("kustomization.yaml: %v %v", err, strict)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s", k.APIVersion, k.Kind)
	}

	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var manifests []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			manifests = append(manifests, base)
		}
	}
	listed := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(listed, manifests) {
		t.Errorf("kustomization.yaml resources = %v, want every manifest in k8s/: %v", listed, manifests)
	}

	var b bundle
	for _, f := range manifests {
		objs, err := decodeFile(filepath.Join(k8sDir, f))
		if err != nil {
			t.Error(err)
		}
		b = append(b, objs...)
	}
	return b, k
}

func TestK8sManifests(t *testing.T) {
	b, k := loadK8s(t)
	if t.Failed() {
		t.FailNow()
	}

	for _, o := range b {
		if o.kind != "Namespace" && o.meta.Namespace != k.Namespace {
			t.Errorf("%s %s: namespace %q, want %q as in kustomization.yaml", o.kind, o.meta.Name, o.meta.Namespace, k.Namespace)
		}
	}
	ns := one[corev1.Namespace](t, b, "Namespace")
	if ns.Name != k.Namespace {
		t.Errorf("Namespace %s, want %s", ns.Name, k.Namespace)
	}
	for _, kind := range []string{"HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "ServiceAccount"} {
		if len(b.all(kind)) != 1 {
			t.Errorf("want one %s in k8s/, got %d", kind, len(b.all(kind)))
		}
	}

	d, env := checkProxyDeployment(t, b)
	wantEnv(t, env, "DATABASE_AUTO_MIGRATE", "false")
	for _, name := range []string{"DATABASE_URL", "REDIS_URL", "MANAGEMENT_TOKEN", "ENCRYPTION_KEY"} {
		wantSecretEnv(t, env, name)
	}
	checkSchemaWait(t, b, d)

	job := one[batchv1.Job](t, b, "Job")
	checkMigrationJob(t, b, job)
	if len(job.Annotations) > 0 {
		t.Errorf("Job %s: plain manifests carry no Helm hook annotations, got %v", job.Name, job.Annotations)
	}
	image := d.Spec.Template.Spec.Containers[0].Image
	if got := job.Spec.Template.Spec.Containers[0].Image; got != image {
		t.Errorf("migration Job image %q differs from the proxy image %q", got, image)
	}

	for _, o := range b.all("Deployment") {
		checkRefsResolve(t, b, o.meta.Name, o.obj.(*appsv1.Deployment).Spec.Template.Spec)
	}
	checkRefsResolve(t, b, job.Name, job.Spec.Template.Spec)
	checkSelectorsExclusive(t, b)
}

// checkSchemaWait checks that the proxy pods wait for the migration Job in
// an initContainer running `migrate wait`.
func checkSchemaWait(t *testing.T, b bundle, d *appsv1.Deployment) {
	t.Helper()
	inits := d.Spec.Template.Spec.InitContainers
	if len(inits) != 1 || !strings.Contains(commandLine(inits[0]), "migrate wait") {
		t.Fatalf("Deployment %s: want one initContainer running `migrate wait`, got %+v", d.Name, inits)
	}
	wantSecretEnv(t, containerEnv(t, b, inits[0]), "DATABASE_URL")
	if inits[0].Image != d.Spec.Template.Spec.Containers[0].Image {
		t.Errorf("initContainer image %q differs from the proxy image %q: `migrate wait` must know the proxy's schema version",
			inits[0].Image, d.Spec.Template.Spec.Containers[0].Image)
	}
}

// checkRefsResolve checks that every Secret, ConfigMap and ServiceAccount a
// pod spec names is in the bundle.
func checkRefsResolve(t *testing.T, b bundle, owner string, spec corev1.PodSpec) {
	t.Helper()
	for _, name := range secretRefs(spec) {
		if _, ok := b.find("Secret", name); !ok {
			t.Errorf("%s reads Secret %q, which is not in k8s/", owner, name)
		}
	}
	for _, name := range configMapRefs(spec) {
		if _, ok := b.find("ConfigMap", name); !ok {
			t.Errorf("%s reads ConfigMap %q, which is not in k8s/", owner, name)
		}
	}
	if sa := spec.ServiceAccountName; sa != "" {
		if _, ok := b.find("ServiceAccount", sa); !ok {
			t.Errorf("%s runs as ServiceAccount %q, which is not in k8s/", owner, sa)
		}
	}
}
