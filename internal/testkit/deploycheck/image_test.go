package deploycheck

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// knownEnv returns the settings in README.md's configuration table (the
// contract); the standard OTEL_* variables are known too.
func knownEnv(t *testing.T) func(string) bool {
	t.Helper()
	data, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "<!-- config-table:start -->")
	table, _, ok2 := strings.Cut(table, "<!-- config-table:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no config-table markers")
	}
	names := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z0-9_]+)` \\|").FindAllStringSubmatch(table, -1) {
		names[m[1]] = true
	}
	if len(names) < 10 {
		t.Fatalf("read only %d settings from README.md's configuration table", len(names))
	}
	return func(name string) bool { return names[name] || strings.HasPrefix(name, "OTEL_") }
}

// checkEnvNames checks that every variable name is a documented setting.
func checkEnvNames(t *testing.T, where string, known func(string) bool, names []string) {
	t.Helper()
	for _, n := range names {
		if !known(n) {
			t.Errorf("%s sets %s, which is not in README.md's configuration table", where, n)
		}
	}
}

// dockerStage is one FROM ... stage of the Dockerfile.
type dockerStage struct {
	from  string
	lines []string
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerStage
	var args []string
	var cont strings.Builder
	for _, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		line = cont.String() + line
		cont.Reset()
		switch {
		case strings.HasPrefix(line, "FROM "):
			stages = append(stages, dockerStage{from: line})
		case len(stages) == 0:
			args = append(args, line)
		default:
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	if !slices.Contains(args, "ARG GO_VERSION=1.26") || !strings.Contains(stages[0].from, "golang:${GO_VERSION}") {
		t.Errorf("want a golang:1.26 builder, got %v and %q", args, stages[0].from)
	}
	build := strings.Join(stages[0].lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/proxy", "./cmd/migrate"} {
		if !strings.Contains(build, want) {
			t.Errorf("builder stage lacks %q", want)
		}
	}

	final := stages[len(stages)-1]
	if !strings.Contains(final.from, "distroless/static") || !strings.HasSuffix(final.from, ":nonroot") {
		t.Errorf("runtime base = %q, want a distroless static nonroot image", final.from)
	}
	var user string
	for _, l := range final.lines {
		if u, ok := strings.CutPrefix(l, "USER "); ok {
			user = u
		}
		if strings.HasPrefix(l, "HEALTHCHECK") {
			t.Errorf("the runtime image has no shell or curl for %q", l)
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("runtime USER = %q, want a non-root uid", user)
	}
	for _, want := range []string{
		"WORKDIR /app",
		"EXPOSE 8080",
		"COPY --from=build /out/proxy /out/migrate /usr/local/bin/",
		"COPY --from=build --chown=" + user + " /out/var /app/var",
		`ENTRYPOINT ["/usr/local/bin/proxy"]`,
	} {
		if !slices.Contains(final.lines, want) {
			t.Errorf("runtime stage lacks %q", want)
		}
	}
}

// composeService is the part of a Compose service the checks read.
type composeService struct {
	Build       any               `yaml:"build"`
	Image       string            `yaml:"image"`
	Profiles    []string          `yaml:"profiles"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   yaml.Node         `yaml:"depends_on"`
}

// dependsOn returns the service's dependencies and their conditions
// ("service_started" for the short list form).
func (s composeService) dependsOn(t *testing.T) map[string]string {
	t.Helper()
	deps := map[string]string{}
	switch s.DependsOn.Kind {
	case 0:
	case yaml.SequenceNode:
		var names []string
		if err := s.DependsOn.Decode(&names); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			deps[n] = "service_started"
		}
	default:
		var long map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := s.DependsOn.Decode(&long); err != nil {
			t.Fatal(err)
		}
		for n, d := range long {
			deps[n] = d.Condition
		}
	}
	return deps
}

func TestDockerCompose(t *testing.T) {
	data, err := os.ReadFile("../../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]composeService `yaml:"services"`
		Configs  map[string]struct {
			Content string `yaml:"content"`
		} `yaml:"configs"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	known := knownEnv(t)
	svcs := file.Services
	for name, s := range svcs {
		for dep := range s.dependsOn(t) {
			if _, ok := svcs[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
		}
		if s.Image == "llm-proxy:local" {
			checkEnvNames(t, "docker-compose service "+name, known, slices.Collect(maps.Keys(s.Environment)))
		}
	}

	if s, ok := svcs["proxy"]; !ok || len(s.Profiles) != 0 || s.Environment["DATABASE_URL"] != "" {
		t.Errorf("want a default (no profile) proxy on SQLite, got %+v", s)
	}
	for _, name := range []string{"postgres", "redis", "migrate", "proxy-1", "proxy-2", "proxy-3", "lb"} {
		if s, ok := svcs[name]; !ok || !slices.Equal(s.Profiles, []string{"postgres"}) {
			t.Errorf("service %s: want it in the postgres profile, got %+v (present %v)", name, s.Profiles, ok)
		}
	}
	m := svcs["migrate"]
	if got := strings.Join(append(append([]string{}, m.Entrypoint...), m.Command...), " "); !strings.HasPrefix(got, "/usr/local/bin/migrate up --wait") {
		t.Errorf("migrate runs %q, want `migrate up --wait`", got)
	}
	if m.dependsOn(t)["postgres"] != "service_healthy" {
		t.Errorf("migrate must wait for a healthy postgres, depends_on = %v", m.dependsOn(t))
	}
	lb := file.Configs["caddyfile"].Content
	for _, name := range []string{"proxy-1", "proxy-2", "proxy-3"} {
		s := svcs[name]
		if s.Environment["DATABASE_AUTO_MIGRATE"] != "false" || !strings.HasPrefix(s.Environment["DATABASE_URL"], "postgres://") ||
			s.Environment["REDIS_URL"] == "" || s.Environment["ENCRYPTION_KEY"] == "" {
			t.Errorf("%s: want PostgreSQL, Redis, a shared ENCRYPTION_KEY and DATABASE_AUTO_MIGRATE=false, got %v", name, s.Environment)
		}
		if s.dependsOn(t)["migrate"] != "service_completed_successfully" {
			t.Errorf("%s must start after migrate completed, depends_on = %v", name, s.dependsOn(t))
		}
		if !strings.Contains(lb, name+":8080") {
			t.Errorf("the load balancer does not route to %s", name)
		}
	}
	if !strings.Contains(lb, "health_uri /readyz") {
		t.Error("the load balancer must check /readyz")
	}
}
