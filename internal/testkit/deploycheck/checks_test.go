package deploycheck

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// one returns the only object of a kind, failing the test otherwise.
func one[T any](t *testing.T, b bundle, kind string) *T {
	t.Helper()
	objs := b.all(kind)
	if len(objs) != 1 {
		t.Fatalf("want exactly one %s, got %d", kind, len(objs))
	}
	return objs[0].obj.(*T)
}

// envVar is a container env entry resolved through envFrom ConfigMaps.
type envVar struct {
	value  string               // literal or from a ConfigMap
	source *corev1.EnvVarSource // valueFrom, when not a literal
	secret bool                 // from envFrom secretRef (value unknown)
}

// containerEnv resolves a container's environment: envFrom ConfigMaps and
// Secrets of the bundle first, then env entries, which win.
func containerEnv(t *testing.T, b bundle, c corev1.Container) map[string]envVar {
	t.Helper()
	env := map[string]envVar{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			o, ok := b.find("ConfigMap", from.ConfigMapRef.Name)
			if !ok {
				t.Errorf("container %s: envFrom ConfigMap %q is not in the bundle", c.Name, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range o.obj.(*corev1.ConfigMap).Data {
				env[k] = envVar{value: v}
			}
		case from.SecretRef != nil:
			o, ok := b.find("Secret", from.SecretRef.Name)
			if !ok {
				t.Errorf("container %s: envFrom Secret %q is not in the bundle", c.Name, from.SecretRef.Name)
				continue
			}
			s := o.obj.(*corev1.Secret)
			for k := range s.StringData {
				env[k] = envVar{secret: true}
			}
			for k := range s.Data {
				env[k] = envVar{secret: true}
			}
		}
	}
	for _, e := range c.Env {
		env[e.Name] = envVar{value: e.Value, source: e.ValueFrom}
	}
	return env
}

// wantEnv checks that name resolves to the literal value want.
func wantEnv(t *testing.T, env map[string]envVar, name, want string) {
	t.Helper()
	got, ok := env[name]
	switch {
	case !ok:
		t.Errorf("env %s is not set, want %q", name, want)
	case got.source != nil || got.secret:
		t.Errorf("env %s comes from a reference, want the literal %q", name, want)
	case got.value != want:
		t.Errorf("env %s = %q, want %q", name, got.value, want)
	}
}

// wantSecretEnv checks that name is read from a Secret, never a literal.
func wantSecretEnv(t *testing.T, env map[string]envVar, name string) {
	t.Helper()
	got, ok := env[name]
	if !ok || !(got.secret || (got.source != nil && got.source.SecretKeyRef != nil)) {
		t.Errorf("env %s must come from a Secret, got %+v (set %v)", name, got, ok)
	}
}

// commandLine joins a container's command and args.
func commandLine(c corev1.Container) string {
	return strings.Join(append(append([]string{}, c.Command...), c.Args...), " ")
}

// checkProxyDeployment checks the proxy Deployment: selectors, probes,
// the termination grace period, security context and the Service, HPA and
// PDB pointing at it. It returns the proxy container's resolved env.
func checkProxyDeployment(t *testing.T, b bundle) (*appsv1.Deployment, map[string]envVar) {
	t.Helper()
	d := one[appsv1.Deployment](t, b, "Deployment")
	podLabels := labels.Set(d.Spec.Template.Labels)
	if d.Spec.Selector == nil || !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(podLabels) {
		t.Errorf("Deployment %s: selector %v does not match its pod labels %v", d.Name, d.Spec.Selector, podLabels)
	}
	var proxy *corev1.Container
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == "proxy" {
			proxy = &d.Spec.Template.Spec.Containers[i]
		}
	}
	if proxy == nil {
		t.Fatalf("Deployment %s has no container named proxy", d.Name)
	}
	if len(proxy.Ports) != 1 || proxy.Ports[0].ContainerPort != 8080 || proxy.Ports[0].Name != "http" {
		t.Errorf("proxy ports = %+v, want one port http:8080", proxy.Ports)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", proxy.StartupProbe, "/healthz"},
		{"livenessProbe", proxy.LivenessProbe, "/healthz"},
		{"readinessProbe", proxy.ReadinessProbe, "/readyz"},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("proxy %s: want an httpGet probe on %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "http" {
			t.Errorf("proxy %s = %s on port %s, want %s on http", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("Deployment %s: pod securityContext.runAsNonRoot must be true", d.Name)
	}

	env := containerEnv(t, b, *proxy)
	checkEnvNames(t, "Deployment "+d.Name, knownEnv(t), slices.Collect(maps.Keys(env)))
	wantEnv(t, env, "LISTEN_ADDR", ":8080")
	drain := durationEnv(t, env, "DRAIN_DELAY")
	grace := durationEnv(t, env, "SHUTDOWN_GRACE")
	if pod.TerminationGracePeriodSeconds == nil {
		t.Errorf("Deployment %s: terminationGracePeriodSeconds is not set", d.Name)
	} else if got := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; got <= drain+grace {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than DRAIN_DELAY + SHUTDOWN_GRACE = %v", got, drain+grace)
	}

	svc := one[corev1.Service](t, b, "Service")
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service %s: selector %v does not match the proxy pods %v", svc.Name, svc.Spec.Selector, podLabels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service %s: ports = %+v, want one port targeting http", svc.Name, svc.Spec.Ports)
	}
	for _, o := range b.all("HorizontalPodAutoscaler") {
		h := o.obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != d.Name {
			t.Errorf("HPA %s targets %s/%s, want Deployment/%s", h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("HPA %s: minReplicas %v must be set and not above maxReplicas %d", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
	}
	for _, o := range b.all("PodDisruptionBudget") {
		p := o.obj.(*policyv1.PodDisruptionBudget)
		if p.Spec.Selector == nil || !labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(podLabels) {
			t.Errorf("PDB %s: selector %v does not match the proxy pods %v", p.Name, p.Spec.Selector, podLabels)
		}
		if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
			t.Errorf("PDB %s: want exactly one of minAvailable and maxUnavailable", p.Name)
		}
	}
	return d, env
}

// durationEnv parses a Go duration env value.
func durationEnv(t *testing.T, env map[string]envVar, name string) time.Duration {
	t.Helper()
	v, ok := env[name]
	if !ok {
		t.Errorf("env %s is not set", name)
		return 0
	}
	d, err := time.ParseDuration(v.value)
	if err != nil {
		t.Errorf("env %s: %v", name, err)
	}
	return d
}

// checkMigrationJob checks that a Job runs `migrate up --wait` with a
// bounded number of retries and DATABASE_URL from a Secret.
func checkMigrationJob(t *testing.T, b bundle, j *batchv1.Job) {
	t.Helper()
	if j.Spec.BackoffLimit == nil {
		t.Errorf("Job %s: backoffLimit is not set", j.Name)
	}
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("Job %s: restartPolicy = %q, want Never", j.Name, j.Spec.Template.Spec.RestartPolicy)
	}
	cs := j.Spec.Template.Spec.Containers
	if len(cs) != 1 || !strings.Contains(commandLine(cs[0]), "migrate up --wait") {
		t.Fatalf("Job %s: want one container running `migrate up --wait`, got %+v", j.Name, cs)
	}
	env := containerEnv(t, b, cs[0])
	checkEnvNames(t, "Job "+j.Name, knownEnv(t), slices.Collect(maps.Keys(env)))
	wantSecretEnv(t, env, "DATABASE_URL")
}

// secretRefs lists the Secrets a pod spec reads, by name.
func secretRefs(spec corev1.PodSpec) []string {
	var names []string
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		for _, from := range c.EnvFrom {
			if from.SecretRef != nil {
				names = append(names, from.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				names = append(names, e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	return names
}

// configMapRefs lists the ConfigMaps a pod spec reads, by name.
func configMapRefs(spec corev1.PodSpec) []string {
	var names []string
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	for _, c := range containers {
		for _, from := range c.EnvFrom {
			if from.ConfigMapRef != nil {
				names = append(names, from.ConfigMapRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				names = append(names, e.ValueFrom.ConfigMapKeyRef.Name)
			}
		}
	}
	return names
}

// checkSelectorsExclusive checks that the Service and PDB selectors pick
// the proxy pods only, never a migration Job's or a test pod.
func checkSelectorsExclusive(t *testing.T, b bundle) {
	t.Helper()
	others := map[string]labels.Set{}
	for _, o := range b.all("Job") {
		others["Job "+o.meta.Name] = o.obj.(*batchv1.Job).Spec.Template.Labels
	}
	for _, o := range b.all("Pod") {
		others["Pod "+o.meta.Name] = o.meta.Labels
	}
	selectors := map[string]labels.Selector{}
	for _, o := range b.all("Service") {
		selectors["Service "+o.meta.Name] = labels.SelectorFromSet(o.obj.(*corev1.Service).Spec.Selector)
	}
	for _, o := range b.all("PodDisruptionBudget") {
		if sel := o.obj.(*policyv1.PodDisruptionBudget).Spec.Selector; sel != nil {
			selectors["PDB "+o.meta.Name] = labels.SelectorFromSet(sel.MatchLabels)
		}
	}
	for sname, sel := range selectors {
		for oname, l := range others {
			if sel.Matches(l) {
				t.Errorf("%s selects the pods of %s", sname, oname)
			}
		}
	}
}
