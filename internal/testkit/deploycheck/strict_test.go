package deploycheck

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStrictDecodingRejects proves the decoder that guards the chart and
// k8s/ fails on each kind of mistake, using fixtures in testdata/.
func TestStrictDecodingRejects(t *testing.T) {
	tests := []struct {
		file    string
		wantErr string // "" means the fixture must decode
	}{
		{"valid-deployment.yaml", ""},
		{"misspelt-deployment.yaml", `unknown field "spec.replicass"`},
		{"miscased-deployment.yaml", `unknown field "spec.template.spec.containers[0].ports[0].containerport"`},
		{"duplicate-key-deployment.yaml", `duplicate`},
		{"wrong-type-deployment.yaml", `cannot unmarshal string`},
		{"unknown-kind.yaml", `unsupported kind "Ingress"`},
		{"wrong-apiversion.yaml", `unsupported kind "Deployment" (apiVersion "extensions/v1beta1")`},
		{"nameless-service.yaml", `without metadata.name`},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			objs, err := decodeFile(filepath.Join("testdata", tt.file))
			if tt.wantErr == "" {
				if err != nil || len(objs) != 1 {
					t.Fatalf("decodeFile = %d objects, %v; want 1 object", len(objs), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("decodeFile error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSplitDocuments(t *testing.T) {
	in := "# only a comment\n---\n# Source: a.yaml\napiVersion: v1\n--- # trailing comment\n\n---\nkind: X\n...\n"
	docs := splitDocuments([]byte(in))
	if len(docs) != 2 {
		t.Fatalf("got %d documents %q, want 2", len(docs), docs)
	}
	if !strings.Contains(string(docs[0]), "apiVersion: v1") || !strings.Contains(string(docs[1]), "kind: X") {
		t.Errorf("documents = %q", docs)
	}
}

// TestFixturesDifferFromValidOnlyByTheirMistake guards the rejection test
// against fixtures that fail for some other reason than the one named.
func TestFixturesDifferFromValidOnlyByTheirMistake(t *testing.T) {
	valid := readLines(t, "valid-deployment.yaml")
	for _, f := range []string{"misspelt-deployment.yaml", "miscased-deployment.yaml", "wrong-type-deployment.yaml"} {
		got := readLines(t, f)
		if len(got) != len(valid) {
			t.Errorf("%s has %d lines, valid-deployment.yaml %d", f, len(got), len(valid))
			continue
		}
		diff := 0
		for i := range got {
			if got[i] != valid[i] {
				diff++
			}
		}
		if diff != 1 {
			t.Errorf("%s differs from valid-deployment.yaml in %d lines, want 1", f, diff)
		}
	}
}

func readLines(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(string(data), "\n")
}
