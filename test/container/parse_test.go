package container

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// fataler is the part of *testing.T the parsers use; after Fatalf they return zero values,
// for callers (the shared build) that only record the error.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// dockerfile is a Dockerfile read as the builder reads it: stages of instructions, with
// continuation lines joined and comments dropped.
type dockerfile struct{ stages []*stage }

type stage struct {
	from, name string
	instrs     []instr
}

type instr struct {
	cmd   string            // upper case
	flags map[string]string // --name=value before the arguments (RUN, COPY, HEALTHCHECK)
	args  string
	line  int
}

func parseDockerfile(t *testing.T, p string) *dockerfile {
	t.Helper()
	return parseDockerfileErr(p, t)
}

func parseDockerfileErr(p string, t fataler) *dockerfile {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("%v", err)
		return &dockerfile{}
	}
	defer f.Close()
	df := &dockerfile{}
	sc := bufio.NewScanner(f)
	var cur strings.Builder
	start, n := 0, 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue // comments and blank lines, also inside a continued instruction
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), "\\"); ok {
			cur.WriteString(body)
			continue
		}
		cur.WriteString(line)
		in := newInstr(strings.TrimSpace(cur.String()), start)
		cur.Reset()
		if in.cmd == "FROM" {
			f := strings.Fields(in.args)
			for len(f) > 1 && strings.HasPrefix(f[0], "--") { // --platform=$BUILDPLATFORM
				f = f[1:]
			}
			s := &stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			df.stages = append(df.stages, s)
			continue
		}
		if len(df.stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("line %d: %s before FROM", start, in.cmd)
				return df
			}
			continue
		}
		s := df.stages[len(df.stages)-1]
		s.instrs = append(s.instrs, in)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s ends in a continued line", p)
	}
	return df
}

func newInstr(s string, line int) instr {
	cmd, rest, _ := strings.Cut(s, " ")
	in := instr{cmd: strings.ToUpper(cmd), flags: map[string]string{}, line: line}
	rest = strings.TrimSpace(rest)
	if in.cmd == "RUN" || in.cmd == "COPY" || in.cmd == "ADD" || in.cmd == "HEALTHCHECK" {
		for strings.HasPrefix(rest, "--") {
			tok, after, _ := strings.Cut(rest, " ")
			k, v, _ := strings.Cut(strings.TrimPrefix(tok, "--"), "=")
			in.flags[k] = v
			rest = strings.TrimSpace(after)
		}
	}
	in.args = rest
	return in
}

// fields are the arguments split at white space (COPY's sources and destination).
func (in instr) fields() []string { return strings.Fields(in.args) }

// env reads ENV KEY=VALUE... (the legacy ENV KEY VALUE is not used here).
func (in instr) env() map[string]string {
	out := map[string]string{}
	for _, w := range shellWords(nil, in.args) {
		k, v, ok := strings.Cut(w, "=")
		if ok {
			out[k] = v
		}
	}
	return out
}

// healthCmd is the exec-form command of HEALTHCHECK ... CMD [...].
func (in instr) healthCmd(t fataler) []string {
	t.Helper()
	rest, ok := strings.CutPrefix(in.args, "CMD ")
	var argv []string
	if !ok || json.Unmarshal([]byte(rest), &argv) != nil || len(argv) == 0 {
		t.Fatalf("line %d: HEALTHCHECK %s: want CMD [\"...\", ...] (exec form: distroless has no shell)", in.line, in.args)
	}
	return argv
}

func (s *stage) all(cmd string) []instr {
	var out []instr
	for _, in := range s.instrs {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func (s *stage) last(cmd string) *instr {
	all := s.all(cmd)
	if len(all) == 0 {
		return nil
	}
	return &all[len(all)-1]
}

func (s *stage) env() map[string]string {
	out := map[string]string{}
	for _, in := range s.all("ENV") {
		for k, v := range in.env() {
			out[k] = v
		}
	}
	return out
}

// execForm is the JSON array of the last ENTRYPOINT or CMD.
func (s *stage) execForm(t fataler, cmd string) []string {
	t.Helper()
	in := s.last(cmd)
	if in == nil {
		t.Fatalf("no %s", cmd)
		return nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil {
		t.Fatalf("line %d: %s %s: want the exec form, a JSON array (distroless has no shell): %v", in.line, cmd, in.args, err)
	}
	return argv
}

// cmdArgs is the CMD's exec form, or none without a CMD.
func (s *stage) cmdArgs(t fataler) []string {
	if s.last("CMD") == nil {
		return nil
	}
	return s.execForm(t, "CMD")
}

// shellWords splits s as sh does words: white space outside quotes separates, single and
// double quotes group, a backslash escapes the next character (outside single quotes).
func shellWords(t fataler, s string) []string {
	var out []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				if t != nil {
					t.Fatalf("unclosed ' in %q", s)
				}
				return out
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				w.WriteByte(s[i])
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteByte(s[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, w.String())
	}
	return out
}

// ignoreRule is one .dockerignore line: the pattern as a regular expression over slash paths
// relative to the context, and whether it is an exception (!).
type ignoreRule struct {
	re  *regexp.Regexp
	neg bool
}

func readDockerignore(p string) ([]ignoreRule, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var rules []ignoreRule
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		r := ignoreRule{}
		if rest, ok := strings.CutPrefix(l, "!"); ok {
			l, r.neg = strings.TrimSpace(rest), true
		}
		l = strings.TrimPrefix(path.Clean(filepath.ToSlash(l)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case l[i] == '*':
				re.WriteString("[^/]*")
			case l[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(l[i : i+1]))
			}
		}
		re.WriteString("$")
		if r.re, err = regexp.Compile(re.String()); err != nil {
			return nil, fmt.Errorf(".dockerignore %q: %w", l, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// ignored applies the rules as Docker does: the last rule matching the path or one of its
// parent directories decides.
func ignored(rules []ignoreRule, rel string) bool {
	out := false
	for _, r := range rules {
		for p := rel; p != "."; p = path.Dir(p) {
			if r.re.MatchString(p) {
				out = !r.neg
				break
			}
		}
	}
	return out
}

func TestDockerignore(t *testing.T) {
	rules, err := readDockerignore(filepath.Join(repo, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	kept := []string{"go.mod", "go.sum", "cmd/dialtrap/main.go", "internal/dashboard/assets/index.html", "internal/event/event.go"}
	left := []string{".git/HEAD", ".env", "bin/dialtrap", "data/dialtrap.db", "dialtrap.db", "README.md", "test/e2e/node_test.go",
		"cmd/dialtrap/health_test.go", "internal/event/testdata/event.golden", "bench/capture/main.go"}
	for _, rel := range kept {
		if ignored(rules, rel) {
			t.Errorf("%s is left out of the build context", rel)
		}
	}
	for _, rel := range left {
		if !ignored(rules, rel) {
			t.Errorf("%s is in the build context", rel)
		}
	}
}

// composeFile is compose.yaml, decoded strictly: a key the test does not know is an error,
// so a misspelt one (cap-add) does not pass unnoticed.
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Build struct {
		Context string            `yaml:"context"`
		Args    map[string]string `yaml:"args"`
	} `yaml:"build"`
	Image           string                    `yaml:"image"`
	Restart         string                    `yaml:"restart"`
	DependsOn       map[string]map[string]any `yaml:"depends_on"`
	Command         []string                  `yaml:"command"`
	Environment     map[string]string         `yaml:"environment"`
	Ports           []string                  `yaml:"ports"`
	Volumes         []string                  `yaml:"volumes"`
	Tmpfs           []string                  `yaml:"tmpfs"`
	NetworkMode     string                    `yaml:"network_mode"`
	User            string                    `yaml:"user"`
	CapAdd          []string                  `yaml:"cap_add"`
	CapDrop         []string                  `yaml:"cap_drop"`
	SecurityOpt     []string                  `yaml:"security_opt"`
	ReadOnly        bool                      `yaml:"read_only"`
	StopGracePeriod string                    `yaml:"stop_grace_period"`
	Healthcheck     struct {
		Disable bool `yaml:"disable"`
	} `yaml:"healthcheck"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var cf composeFile
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return cf
}

// apiPublished is host:port where the service publishes the API's port 8082.
func (s composeService) apiPublished(t *testing.T) string {
	t.Helper()
	for _, p := range s.Ports {
		parts := strings.Split(strings.TrimSuffix(p, "/tcp"), ":")
		if len(parts) == 3 && parts[2] == "8082" {
			return parts[0] + ":" + parts[1]
		}
	}
	t.Fatalf("ports %q: the API (8082) is not published as HOST_IP:PORT:8082", s.Ports)
	return ""
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate substitutes ${VAR}, ${VAR:-default} and ${VAR:?error} as compose does, with
// vars as the environment; a missing required variable fails the test.
func interpolate(t *testing.T, s string, vars map[string]string) string {
	t.Helper()
	return composeVar.ReplaceAllStringFunc(s, func(m string) string {
		g := composeVar.FindStringSubmatch(m)
		v, ok := vars[g[1]]
		set := ok && (v != "" || !strings.HasPrefix(g[2], ":"))
		switch strings.TrimPrefix(g[2], ":") {
		case "-":
			if !set {
				return g[3]
			}
		case "?":
			if !set {
				t.Fatalf("compose.yaml needs %s: %s", g[1], g[3])
			}
		}
		return v
	})
}
