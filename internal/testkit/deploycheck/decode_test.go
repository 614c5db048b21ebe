package deploycheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// object is one decoded Kubernetes object and where it came from.
type object struct {
	source string // file#document
	kind   string
	meta   metav1.ObjectMeta
	obj    any // pointer to the k8s.io/api type
}

// kinds maps apiVersion/kind to a constructor of its API type. Anything
// else is rejected: a deployment file may only hold these kinds.
var kinds = map[string]func() any{
	"v1/Namespace":                           func() any { return new(corev1.Namespace) },
	"v1/Service":                             func() any { return new(corev1.Service) },
	"v1/ConfigMap":                           func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                              func() any { return new(corev1.Secret) },
	"v1/Pod":                                 func() any { return new(corev1.Pod) },
	"v1/ServiceAccount":                      func() any { return new(corev1.ServiceAccount) },
	"v1/PersistentVolumeClaim":               func() any { return new(corev1.PersistentVolumeClaim) },
	"apps/v1/Deployment":                     func() any { return new(appsv1.Deployment) },
	"batch/v1/Job":                           func() any { return new(batchv1.Job) },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"policy/v1/PodDisruptionBudget":          func() any { return new(policyv1.PodDisruptionBudget) },
}

var separator = regexp.MustCompile(`^---(\s.*)?$`)

// splitDocuments splits a YAML stream at its "---" lines and drops the
// documents holding only comments and blank lines.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	content := false
	flush := func() {
		if content {
			docs = append(docs, bytes.Clone(cur.Bytes()))
		}
		cur.Reset()
		content = false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if separator.MatchString(line) {
			flush()
			continue
		}
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			content = true
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// decodeStrict decodes one YAML document into its Kubernetes API type. It
// fails on duplicate keys, unknown fields, fields whose case differs from
// the API's, wrongly typed values, unknown kinds and a missing name.
func decodeStrict(doc []byte) (any, metav1.TypeMeta, error) {
	var tm metav1.TypeMeta
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, tm, fmt.Errorf("yaml: %w", err)
	}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(j, &tm); err != nil {
		return nil, tm, fmt.Errorf("type meta: %w", err)
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, tm, fmt.Errorf("unsupported kind %q (apiVersion %q)", tm.Kind, tm.APIVersion)
	}
	obj := newObj()
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return nil, tm, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if len(strict) > 0 {
		return nil, tm, fmt.Errorf("%s: %w", tm.Kind, errors.Join(strict...))
	}
	if objectMeta(obj).Name == "" {
		return nil, tm, fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	return obj, tm, nil
}

// objectMeta returns the metadata of a decoded API object.
func objectMeta(obj any) metav1.ObjectMeta {
	return *obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
}

// decodeFile decodes every document of a YAML file, collecting all errors.
func decodeFile(path string) ([]object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var objs []object
	var errs []error
	for i, doc := range splitDocuments(data) {
		src := fmt.Sprintf("%s#%d", filepath.Base(path), i)
		obj, tm, err := decodeStrict(doc)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
			continue
		}
		objs = append(objs, object{source: src, kind: tm.Kind, meta: objectMeta(obj), obj: obj})
	}
	return objs, errors.Join(errs...)
}

// bundle is every object of one deployment (a rendered value set or k8s/).
type bundle []object

// all returns the objects of a kind, sorted by name.
func (b bundle) all(kind string) []object {
	var out []object
	for _, o := range b {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].meta.Name < out[j].meta.Name })
	return out
}

// find returns the object of a kind and name.
func (b bundle) find(kind, name string) (object, bool) {
	for _, o := range b {
		if o.kind == kind && o.meta.Name == name {
			return o, true
		}
	}
	return object{}, false
}
