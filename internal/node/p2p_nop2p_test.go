//go:build nop2p

package node

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// Built with -tags nop2p, New refuses -p and -b as a configuration error that says why and
// what to do; a node without them captures, stores and serves as in the default build, and
// /peers answers 404 as on a node without -p. Run with go test -tags nop2p -run NoP2P.
func TestNoP2PRefusesPeerOptions(t *testing.T) {
	if P2PBuilt {
		t.Fatal("P2PBuilt is true in a build with -tags nop2p")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-p"}, "-p/--p2p"},
		{[]string{"--p2p", "-b", "/ip4/127.0.0.1/tcp/4222"}, "-p/--p2p"},
		{[]string{"-b", "/ip4/127.0.0.1/tcp/4222"}, "-b/--bootstrap"},
	} {
		n, err := New(load(t, c.args...), Options{})
		if err == nil {
			n.Close(t.Context())
			t.Errorf("New(%q) accepted peer-to-peer options in a nop2p build", c.args)
			continue
		}
		var ce ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, errNoP2P) {
			t.Errorf("New(%q): %v (%T), want a ConfigError wrapping errNoP2P", c.args, err, err)
		}
		for _, want := range []string{c.want, "built without peer-to-peer support", "-tags nop2p", "use the default build"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("New(%q): %q lacks %q", c.args, err, want)
			}
		}
	}
}

func TestNoP2PNodeCapturesAndServes(t *testing.T) {
	cfg := load(t, "-a", "-j", "--p2p-trust", "not-checked-without-p")
	n, logs := startNode(t, cfg)
	if a := n.Addrs(); a.PeerID != "" || a.P2P != nil {
		t.Errorf("peer addresses in a nop2p build: %+v", a)
	}
	probeTCP(t, n.Addrs().SIPTCP, "127.0.0.50", "0046812118532")
	testutil.Eventually(t, "the node stores its probe", 10*time.Second, func() bool { return servesIP(t, n, "127.0.0.50") })
	status, body := get(t, n, "/peers", "")
	if status != http.StatusNotFound || !strings.Contains(body, "Peer-to-peer is off") {
		t.Errorf("/peers in a nop2p build: %d %s, want the 404 of a node without -p", status, body)
	}
	if status, body := get(t, n, "/health-check", ""); status != http.StatusOK {
		t.Errorf("/health-check: %d %s", status, body)
	}
	testutil.Eventually(t, "the JSON log has the probe", 10*time.Second, func() bool {
		b, _ := os.ReadFile(cfg.JSONLogFile)
		return strings.Contains(string(b), `"source_ip":"127.0.0.50"`)
	})
	if strings.Contains(logs.String(), "peer_id=") {
		t.Errorf("the start-up line names a peer ID in a nop2p build:\n%s", logs)
	}
}
