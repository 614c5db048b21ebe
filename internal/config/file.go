package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// envRef matches ${VAR} and ${VAR:-default}.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expand replaces ${VAR} with the variable's value ("" when unset) and
// ${VAR:-default} with the value, or default when the variable is unset or
// empty. A bare $VAR is left alone, so "$" may appear in values.
func expand(text string, getenv func(string) string) string {
	return envRef.ReplaceAllStringFunc(text, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		v := getenv(m[1])
		if v == "" && m[2] != "" {
			return m[3]
		}
		return v
	})
}

// readFile loads the YAML file at path into out. src names where the path
// came from ("--config" or "CONFIG_FILE"). Unknown keys, non-scalar values
// and syntax errors are problems.
func readFile(path, src string, table []field, out *settings, getenv func(string) string, p *parser) {
	data, err := os.ReadFile(path)
	if err != nil {
		p.problems = append(p.problems, fmt.Sprintf("%s: read config file: %v", src, err))
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(expand(string(data), getenv)), &doc); err != nil {
		p.problems = append(p.problems, fmt.Sprintf("%s: config file %s is not valid YAML: %v", src, path, err))
		return
	}
	if len(doc.Content) == 0 {
		return
	}
	keys := map[string]field{}
	for _, f := range table {
		if f.key != "" {
			keys[f.key] = f
		}
	}
	w := fileWalker{path: path, keys: keys, out: out, p: p}
	w.walk(doc.Content[0], "")
}

type fileWalker struct {
	path string
	keys map[string]field
	out  *settings
	p    *parser
}

func (w *fileWalker) problem(key, msg string) {
	w.p.problems = append(w.p.problems, fmt.Sprintf("%s in %s: %s", key, w.path, msg))
}

// walk visits a mapping node whose keys sit under prefix ("" or "database.").
func (w *fileWalker) walk(n *yaml.Node, prefix string) {
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return
		}
		where := strings.TrimSuffix(prefix, ".")
		if where == "" {
			where = "top level"
		}
		w.problem(where, "must be a mapping of keys to values")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := prefix+n.Content[i].Value, n.Content[i+1]
		if f, ok := w.keys[key]; ok {
			w.leaf(f, key, val)
			continue
		}
		if w.isSection(key + ".") {
			w.walk(val, key+".")
			continue
		}
		w.problem(key, fmt.Sprintf("unknown key (line %d); see the configuration table in README.md", n.Content[i].Line))
	}
}

func (w *fileWalker) isSection(prefix string) bool {
	for k := range w.keys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

func (w *fileWalker) leaf(f field, key string, n *yaml.Node) {
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
	case n.Kind != yaml.ScalarNode:
		w.problem(key, "must be a single value")
	case n.Value != "":
		*w.out.at(f) = value{text: n.Value, from: key + " in " + w.path, set: true}
	}
}
