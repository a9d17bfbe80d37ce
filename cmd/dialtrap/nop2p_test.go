//go:build nop2p

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Built with -tags nop2p, dialtrap refuses peer-to-peer options at start-up with the usage
// status (2) and a message that says why and what to do, wherever the option comes from: the
// command line, the environment (ours or the reference product's name) or the config file.
// Run with go test -tags nop2p -run NoP2P.
func TestNoP2PRefusesPeerOptionsAtStartup(t *testing.T) {
	dir := t.TempDir()
	toml := filepath.Join(dir, "dialtrap.toml")
	if err := os.WriteFile(toml, []byte("p2p = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"--data-dir", dir, "--sip-addr", "127.0.0.1:0", "-z", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"}
	for _, c := range []struct {
		name string
		args []string
		env  [2]string
		want string
	}{
		{"-p", []string{"-p"}, [2]string{}, "-p/--p2p"},
		{"--p2p", []string{"--p2p"}, [2]string{}, "-p/--p2p"},
		{"-b", []string{"-b", "/ip4/127.0.0.1/tcp/4222"}, [2]string{}, "-b/--bootstrap"},
		{"env", nil, [2]string{"DIALTRAP_P2P", "true"}, "-p/--p2p"},
		{"legacy env", nil, [2]string{"SENTRYPEER_PEER_TO_PEER", "true"}, "-p/--p2p"},
		{"bootstrap env", nil, [2]string{"DIALTRAP_BOOTSTRAP", "/ip4/127.0.0.1/tcp/4222"}, "-b/--bootstrap"},
		{"toml", []string{"-g", toml}, [2]string{}, "-p/--p2p"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env[0] != "" {
				t.Setenv(c.env[0], c.env[1])
			}
			var out, errOut strings.Builder
			code := run(append(append([]string{}, base...), c.args...), &out, &errOut)
			if code != exitUsage {
				t.Errorf("exit %d, want %d (usage)\nstderr: %s", code, exitUsage, errOut.String())
			}
			msg := errOut.String()
			for _, want := range []string{"dialtrap: " + c.want, "built without peer-to-peer support",
				"built with -tags nop2p", "use the default build", "in the config file"} {
				if !strings.Contains(msg, want) {
					t.Errorf("stderr lacks %q:\n%s", want, msg)
				}
			}
			if strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("want the refusal alone, one line:\n%s", msg)
			}
		})
	}
}
