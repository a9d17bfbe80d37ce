// The operator guides (docs/guides/*.md) against the code: every flag they mention is one the
// binary knows (for the subcommand they give it to), and the configurations they show are the
// ones the end-to-end tests run. (links_test.go checks their links, as every document's.)

package docs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
)

var binary string // the dialtrap binary built once for all tests

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dialtrap-docs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dialtrap")
	out, err := exec.Command("go", "build", "-o", binary, "../../cmd/dialtrap").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build dialtrap: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// guides are the guides' paths (relative to root) and their text.
func guides(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(root, "docs", "guides", "*.md"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no guides in docs/guides (%v)", err)
	}
	m := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		m[rel] = string(b)
	}
	return m
}

var (
	helpFlagRe   = regexp.MustCompile(`(?m)^\s+(?:-[a-zA-Z], )?--([a-z0-9][a-z0-9-]*)`)
	subcommandRe = regexp.MustCompile(`(?m)^\s+dialtrap ([a-z]+) `)
	statusRe     = regexp.MustCompile(`(?m)dialtrap ([a-z]+) status \[flags\]`)
)

// commandFlags runs the binary's help for the node and every subcommand it lists (and their
// status subcommands) and returns each one's long flags: "" is the node, "block status" a
// nested one.
func commandFlags(t *testing.T) map[string][]string {
	t.Helper()
	help := func(args ...string) string {
		out, _ := exec.Command(binary, append(args, "-h")...).CombinedOutput() // -h may exit non-zero
		return string(out)
	}
	flags := func(h string) []string {
		var fs []string
		for _, m := range helpFlagRe.FindAllStringSubmatch(h, -1) {
			fs = append(fs, m[1])
		}
		return fs
	}
	top := help()
	cmds := map[string][]string{"": flags(top)}
	if len(cmds[""]) < 50 {
		t.Fatalf("dialtrap -h lists %d flags; its format changed?\n%s", len(cmds[""]), top)
	}
	for _, m := range subcommandRe.FindAllStringSubmatch(top, -1) {
		sub := m[1]
		h := help(sub)
		cmds[sub] = flags(h)
		for _, s := range statusRe.FindAllStringSubmatch(h, -1) {
			if s[1] == sub {
				cmds[sub+" status"] = flags(help(sub, "status"))
			}
		}
	}
	for _, want := range []string{"check", "top", "block", "block status", "bgp", "bgp status"} {
		if len(cmds[want]) == 0 {
			t.Fatalf("no flags found for dialtrap %s: the help's format changed?", want)
		}
	}
	return cmds
}

var (
	fenceRe     = regexp.MustCompile("(?m)^\\s*```")
	inlineRe    = regexp.MustCompile("`[^`\n]+`")
	flagRe      = regexp.MustCompile(`(?:^|[^\w-])--([a-z][a-z0-9-]*)`)
	dialtrapRe  = regexp.MustCompile(`(?:^|[\s/("'=])dialtrap(?:\s|$)`)
	commentRe   = regexp.MustCompile(`^\s*(?:#|;|//)`)
	tomlKeyRe   = regexp.MustCompile(`^\s*#?\s*([a-z][a-z0-9-]*)\s*=`)
	tomlTableRe = regexp.MustCompile(`^\s*\[[^\]]+\]\s*$`)
	envRe       = regexp.MustCompile(`\bDIALTRAP_([A-Z0-9_]+)`)
	// a command's end: a pipe, a list operator, a command substitution's end
	commandEnd = regexp.MustCompile(`\||&&|;|\)`)
)

// block is a fenced code block: its info string ("sh", "toml", ...) and its lines, with shell
// continuation lines joined.
type block struct {
	info  string
	lines []string
}

// split cuts a guide into its prose and its fenced code blocks.
func split(text string) (prose string, blocks []block) {
	parts := fenceRe.Split(text, -1)
	var p strings.Builder
	for i, part := range parts {
		if i%2 == 0 {
			p.WriteString(part)
			continue
		}
		info, body, _ := strings.Cut(part, "\n")
		body = strings.ReplaceAll(body, "\\\n", " ")
		blocks = append(blocks, block{strings.TrimSpace(info), strings.Split(body, "\n")})
	}
	return p.String(), blocks
}

// dialtrapCommands finds the dialtrap commands in a line and returns, for each, the command
// ("" for the node, "block", "block status", ...) and its arguments up to the command's end.
func dialtrapCommands(line string, cmds map[string][]string) (found [][2]string, rest string) {
	rest = line
	for {
		loc := dialtrapRe.FindStringIndex(rest)
		if loc == nil {
			return found, rest
		}
		args := rest[loc[1]:]
		if e := commandEnd.FindStringIndex(args); e != nil {
			args = args[:e[0]]
		}
		words := strings.Fields(args)
		cmd := ""
		if len(words) > 0 {
			if _, ok := cmds[words[0]]; ok {
				cmd = words[0]
				if len(words) > 1 {
					if _, ok := cmds[cmd+" "+words[1]]; ok {
						cmd += " " + words[1]
					}
				}
			}
		}
		found = append(found, [2]string{cmd, args})
		rest = rest[:loc[0]] + " " + rest[loc[1]+len(args):]
	}
}

// TestGuideFlagsExist: every --flag a guide mentions is one the binary knows. In a dialtrap
// command line (in a code block or an inline code span), the flag must belong to that
// command (the node, or the subcommand given); elsewhere in prose and in comments of code
// blocks, to some dialtrap command. Flags of other tools are only allowed in their own command
// lines (curl, nft, fail2ban-regex ...). The keys of TOML blocks (commented out or not) must be
// options of the node, unless the block has tables (dialtrap's file has none: it is another
// program's), and every DIALTRAP_<NAME> variable must be the environment form of a flag.
func TestGuideFlagsExist(t *testing.T) {
	cmds := commandFlags(t)
	var all []string
	for _, fs := range cmds {
		all = append(all, fs...)
	}
	for path, text := range guides(t) {
		check := func(where, s string, known []string, whose string) {
			for _, m := range flagRe.FindAllStringSubmatch(s, -1) {
				if !slices.Contains(known, m[1]) {
					t.Errorf("%s: %s mentions --%s, which %s", path, where, m[1], whose)
				}
			}
		}
		// commands checks the dialtrap commands of a line and returns the rest of it.
		commands := func(where, line string) (rest string, found int) {
			cmds2, rest := dialtrapCommands(line, cmds)
			for _, f := range cmds2 {
				check(fmt.Sprintf("%s `dialtrap %s`", where, strings.TrimSpace(f[1])), f[1], cmds[f[0]],
					strings.TrimSpace("dialtrap "+f[0])+" does not know")
			}
			return rest, len(cmds2)
		}
		prose, blocks := split(text)
		for _, b := range blocks {
			// dialtrap's TOML file has no tables: a TOML block with one configures another
			// program (a log shipper, say).
			if b.info == "toml" && slices.ContainsFunc(b.lines, func(l string) bool { return tomlTableRe.MatchString(l) }) {
				b.info = "toml (another program's)"
			}
			for _, line := range b.lines {
				rest, _ := commands("a code block", line)
				if commentRe.MatchString(line) {
					check("a comment in a code block", rest, all, "no dialtrap command knows")
				}
				// Otherwise the rest is another tool's command line, or a configuration.
				if m := tomlKeyRe.FindStringSubmatch(line); b.info == "toml" && m != nil && !slices.Contains(cmds[""], m[1]) {
					t.Errorf("%s: a TOML block sets %q, which is no option of the node (dialtrap -h)", path, m[1])
				}
			}
		}
		// Environment variables: in the prose and in shell, unit, TOML and Compose blocks
		// (not in a proxy's configuration, whose own names may start with DIALTRAP_).
		envText := prose
		for _, b := range blocks {
			if slices.Contains([]string{"sh", "bash", "console", "ini", "toml", "yaml", "env"}, b.info) {
				envText += "\n" + strings.Join(b.lines, "\n")
			}
		}
		for _, m := range envRe.FindAllStringSubmatch(envText, -1) {
			if name := strings.ToLower(strings.ReplaceAll(m[1], "_", "-")); !slices.Contains(all, name) {
				t.Errorf("%s: DIALTRAP_%s is the variable of --%s, which no dialtrap command knows", path, m[1], name)
			}
		}
		for _, span := range inlineRe.FindAllString(prose, -1) {
			span = strings.Trim(span, "`")
			if _, n := commands("inline code", span); n == 0 && strings.HasPrefix(span, "--") {
				check("inline code `"+span+"`", span, all, "no dialtrap command knows")
			}
		}
		check("the prose", inlineRe.ReplaceAllString(prose, " "), all, "no dialtrap command knows")
	}
}

// TestGuidesShowTestedConfigs: the configurations the guides show are, word for word, the
// testdata files the end-to-end tests run (test/e2e/guides_test.go), rendered with the values
// the guides use. A configuration file's "# --- guide ---" line marks where the guide's part
// begins.
func TestGuidesShowTestedConfigs(t *testing.T) {
	for _, c := range []struct {
		guide, file string
		fields      map[string]any // the guide's values for the template's fields
	}{
		{"bgp.md", "test/e2e/testdata/guides/bird.conf", nil},
		{"pbx-integration.md", "test/e2e/testdata/guides/kamailio-http.cfg", map[string]any{"API": "http://127.0.0.1:8082", "Token": "change-me"}},
		{"pbx-integration.md", "test/e2e/testdata/guides/kamailio-policy.cfg", map[string]any{"Agent": "127.0.0.1:5070"}},
	} {
		b, err := os.ReadFile(filepath.Join(root, c.file))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		if c.fields != nil {
			c.fields["Port"], c.fields["ModulePath"] = 5060, "/usr/lib/x86_64-linux-gnu/kamailio/modules"
			tmpl, err := template.New(c.file).Parse(text)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := tmpl.Execute(&out, c.fields); err != nil {
				t.Fatal(err)
			}
			text = out.String()
		}
		if _, part, ok := strings.Cut(text, "# --- guide ---\n"); ok {
			text = part
		}
		guide, err := os.ReadFile(filepath.Join(root, "docs", "guides", c.guide))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(guide), "```\n"+text+"```\n") {
			t.Errorf("docs/guides/%s no longer shows %s as the tests run it (a code block of its own); copy it there again:\n%s", c.guide, c.file, text)
		}
	}
}
