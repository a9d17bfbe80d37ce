package pkg

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/config"
)

// uncomment returns the file with its commented-out settings switched on: the lines that
// start with '#' directly followed by a setting (key = or NAME=), not the prose comments.
func uncomment(t *testing.T, path string, setting *regexp.Regexp) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "#"); ok && setting.MatchString(rest) {
			l = rest
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// The packaged dialtrap.toml loads (the node refuses unknown keys), as shipped and with every
// commented-out example switched on, and says what the unit's directories expect.
func TestPackagedConfig(t *testing.T) {
	path := filepath.Join(root, "packaging/etc/dialtrap.toml")
	noEnv := func(string) (string, bool) { return "", false }
	c, err := config.Load([]string{"-g", path}, noEnv)
	if err != nil {
		t.Fatalf("the packaged config does not load: %v", err)
	}
	if c.DataDir != "/var/lib/dialtrap" || c.JSONLogFile != "/var/log/dialtrap/dialtrap_json.log" || !c.JSONLog {
		t.Errorf("data-dir %q, json-log %t in %q: want /var/lib/dialtrap (StateDirectory) and the JSON log in /var/log/dialtrap (LogsDirectory)", c.DataDir, c.JSONLog, c.JSONLogFile)
	}
	if !c.API || c.APIAddr != "127.0.0.1:8082" {
		t.Errorf("api %t on %q: want the API on 127.0.0.1:8082, where block.env points the agent", c.API, c.APIAddr)
	}
	if c.SIPResponsive || c.P2P {
		t.Errorf("the packaged config should be passive and without peer-to-peer (responsive %t, p2p %t)", c.SIPResponsive, c.P2P)
	}

	all := filepath.Join(t.TempDir(), "all.toml")
	text := uncomment(t, path, regexp.MustCompile(`^[a-z0-9-]+ = `))
	if err := os.WriteFile(all, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load([]string{"-g", all}, noEnv); err != nil {
		t.Errorf("the packaged config with its examples switched on does not load: %v\n%s", err, text)
	}
}

// Every variable dialtrap.env names is one the node reads.
func TestPackagedEnvFile(t *testing.T) {
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[(DIALTRAP_[A-Z0-9_]+)\]`).FindAllStringSubmatch(config.Usage(""), -1) {
		known[m[1]] = true
	}
	if len(known) < 50 {
		t.Fatalf("found only %d variables in dialtrap -h", len(known))
	}
	text := uncomment(t, filepath.Join(root, "packaging/etc/dialtrap.env"), regexp.MustCompile(`^[A-Z0-9_]+=`))
	n := 0
	for _, l := range strings.Split(text, "\n") {
		name, _, ok := strings.Cut(l, "=")
		if !ok || strings.HasPrefix(l, "#") {
			continue
		}
		n++
		if !known[name] {
			t.Errorf("dialtrap.env names %s, which the node does not read", name)
		}
	}
	if n == 0 {
		t.Error("dialtrap.env names no variable")
	}
}
