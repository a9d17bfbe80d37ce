package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/clidoc"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/spf13/pflag"
)

const regenerate = "go test ./cmd/dialtrap -run TestGeneratedDocs -update"

// The committed reference, manual page and completions are what the code generates now.
func TestGeneratedDocs(t *testing.T) {
	d := commandDoc()
	for path, got := range map[string][]byte{
		"../../docs/reference/cli.md":             clidoc.Markdown(d, regenerate),
		"../../contrib/man/dialtrap.1":            clidoc.Man(d),
		"../../contrib/completions/dialtrap.bash": clidoc.Bash(d),
		"../../contrib/completions/_dialtrap":     clidoc.Zsh(d),
		"../../contrib/completions/dialtrap.fish": clidoc.Fish(d),
	} {
		golden.Check(t, path, got)
	}
}

// Every subcommand is collected, each with the flags it parses, and dialtrap -h lists the
// same subcommands.
func TestCommandDocCoversTheCLI(t *testing.T) {
	d := commandDoc()
	var names []string
	for _, c := range d.Subcommands {
		names = append(names, c.Name)
	}
	want := slices.Clone(subcommandOrder)
	want = append(want, "block status", "bgp status")
	slices.Sort(want)
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("collected %v, want %v", names, want)
	}
	for _, c := range d.Subcommands {
		if c.Flags.Lookup("help") == nil {
			t.Errorf("%s: no -h collected: its flag set is not the one it parses", c.Name)
		}
	}
	// A flag the check subcommand parses must be in the reference.
	ref := string(clidoc.Markdown(d, regenerate))
	for _, flag := range []string{"`-q`, `--quiet`", "`--number-match string`", "`--api-url string`"} {
		if !strings.Contains(ref, flag) {
			t.Errorf("reference lacks %s", flag)
		}
	}
}

// Nothing documented is absent from the code and nothing in the code is undocumented: every
// flag the reference names is one the node or that subcommand parses, and every option of the
// node appears with its environment variable.
func TestReferenceMatchesFlags(t *testing.T) {
	ref, err := os.ReadFile("../../docs/reference/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	d := commandDoc()
	sets := map[string]*pflag.FlagSet{"": d.Node.Flags}
	for _, c := range d.Subcommands {
		sets[c.Name] = c.Flags
	}
	section := ""
	head := regexp.MustCompile(`^## (?:dialtrap (.+)|The node)$`)
	flagRE := regexp.MustCompile("^\\| (?:`-(.)`, )?`--([a-z0-9-]+)")
	seen := map[string]map[string]bool{}
	for _, line := range strings.Split(string(ref), "\n") {
		if m := head.FindStringSubmatch(line); m != nil {
			section = m[1]
			continue
		}
		m := flagRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		fs := sets[section]
		if fs == nil {
			t.Errorf("reference documents flags of %q, which is no command", section)
			continue
		}
		f := fs.Lookup(m[2])
		if f == nil || f.Shorthand != m[1] {
			t.Errorf("reference: %q documents -%s --%s, which it does not parse", section, m[1], m[2])
		}
		if seen[section] == nil {
			seen[section] = map[string]bool{}
		}
		seen[section][m[2]] = true
	}
	for name, fs := range sets {
		fs.VisitAll(func(f *pflag.Flag) {
			if !seen[name][f.Name] {
				t.Errorf("%q parses --%s, which docs/reference/cli.md lacks (%s)", name, f.Name, regenerate)
			}
		})
	}
	config.FlagSet().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && f.Name != "version" && !bytes.Contains(ref, []byte(config.EnvName(f.Name))) {
			t.Errorf("reference lacks the environment variable of --%s", f.Name)
		}
	})
}

// The manual page is valid roff: groff renders it without a warning.
func TestManPageRenders(t *testing.T) {
	cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = bytes.NewReader(clidoc.Man(commandDoc()))
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("groff: %v\n%s(install groff-base: scripts/test-deps.sh)", err, out)
	}
	text, err := exec.Command("groff", "-man", "-Tascii", "../../contrib/man/dialtrap.1").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--sip-responsive", "DIALTRAP_SIP_RESPONSIVE", "dialtrap check", "EXIT STATUS"} {
		if !strings.Contains(stripOverstrike(string(text)), want) {
			t.Errorf("rendered manual lacks %q", want)
		}
	}
}

// stripOverstrike removes the backspace bold and underline of groff's terminal output.
func stripOverstrike(s string) string {
	return regexp.MustCompile(".\x08").ReplaceAllString(s, "")
}

// The completions work in the real shells: bash and fish are asked for completions as a user's
// Tab key would ask; zsh, whose completion needs a terminal, parses the function.
func TestCompletionsInRealShells(t *testing.T) {
	dir := t.TempDir()
	d := commandDoc()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bash := write("dialtrap.bash", clidoc.Bash(d))
	if err := os.WriteFile(filepath.Join(dir, "calls.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		line string
		want []string
		not  []string
	}{
		{"dialtrap ch", []string{"check"}, nil},
		{"dialtrap ", []string{"check", "import", "block", "completion"}, []string{"--quiet"}},
		{"dialtrap --sip-re", []string{"--sip-responsive"}, nil},
		{"dialtrap check --", []string{"--quiet", "--api-url", "--number-match"}, []string{"--sip-responsive"}},
		{"dialtrap block st", []string{"status"}, nil},
		{"dialtrap block status --", []string{"--json", "--state-file"}, []string{"status", "--node"}},
		{"dialtrap -f " + dir + "/cal", []string{dir + "/calls.db"}, nil},
		{"dialtrap import " + dir + "/cal", []string{dir + "/calls.db"}, nil},
		{"dialtrap completion ", []string{"bash", "zsh", "fish"}, nil},
	} {
		words := strings.Split(tt.line, " ")
		script := "source " + bash + "\nCOMP_WORDS=(" + quoteWords(words) + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_dialtrap\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		out, err := exec.Command("bash", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("bash %q: %v\n%s", tt.line, err, out)
		}
		checkWords(t, "bash", tt.line, string(out), tt.want, tt.not)
	}

	fish := write("dialtrap.fish", clidoc.Fish(d))
	for _, tt := range []struct {
		line string
		want []string
		not  []string
	}{
		{"dialtrap ch", []string{"check"}, nil},
		{"dialtrap --sip-re", []string{"--sip-responsive"}, nil},
		{"dialtrap check --", []string{"--quiet", "--api-url"}, []string{"--sip-responsive"}},
		{"dialtrap bgp status --", []string{"--status-file"}, []string{"--node"}},
		{"dialtrap completion ", []string{"bash", "zsh", "fish"}, nil},
	} {
		out, err := exec.Command("fish", "--no-config", "-c", "source "+fish+"; complete -C '"+tt.line+"'").CombinedOutput()
		if err != nil {
			t.Fatalf("fish %q: %v\n%s(install fish: scripts/test-deps.sh)", tt.line, err, out)
		}
		var first []string
		for _, l := range strings.Split(string(out), "\n") {
			w, _, _ := strings.Cut(l, "\t")
			first = append(first, w)
		}
		checkWords(t, "fish", tt.line, strings.Join(first, "\n"), tt.want, tt.not)
	}

	zsh := write("_dialtrap", clidoc.Zsh(d))
	if out, err := exec.Command("zsh", "-n", zsh).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s(install zsh: scripts/test-deps.sh)", err, out)
	}
	// Loaded the way compinit loads it, the function is found and defined.
	out, err := exec.Command("zsh", "-f", "-c", "fpath=("+dir+" $fpath); autoload -U compinit; compinit -u -D; "+
		"print -r -- ${_comps[dialtrap]}").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_dialtrap" {
		t.Fatalf("zsh compinit does not bind _dialtrap to dialtrap: %v %q", err, out)
	}
}

func checkWords(t *testing.T, shell, line, out string, want, not []string) {
	t.Helper()
	got := strings.Fields(out)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s: %q completes to %v, lacking %q", shell, line, got, w)
		}
	}
	for _, w := range not {
		if slices.Contains(got, w) {
			t.Errorf("%s: %q completes to %v, which should not hold %q", shell, line, got, w)
		}
	}
}

func quoteWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + w + "'"
	}
	return strings.Join(q, " ")
}

// dialtrap completion prints the same scripts the packages install.
func TestCompletionSubcommand(t *testing.T) {
	for shell, path := range map[string]string{"bash": "dialtrap.bash", "zsh": "_dialtrap", "fish": "dialtrap.fish"} {
		var out, errb bytes.Buffer
		if code := run([]string{"completion", shell}, &out, &errb); code != exitOK {
			t.Fatalf("completion %s: exit %d: %s", shell, code, errb.String())
		}
		want, err := os.ReadFile(filepath.Join("../../contrib/completions", path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("dialtrap completion %s differs from contrib/completions/%s (%s)", shell, path, regenerate)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"completion", "tcsh"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "bash, zsh and fish") {
		t.Errorf("completion tcsh: exit %d, %q", code, errb.String())
	}
}
