package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/node"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
)

// p2pOnly are the module path prefixes that libp2p brings in (itself, multiaddr and the
// transports under it: QUIC, WebRTC, the DHT's IPFS records), and dialtrap's own package
// over it. A binary built with -tags nop2p links none of them.
var p2pOnly = []string{
	"github.com/libp2p/", "github.com/multiformats/", "github.com/quic-go/", "github.com/pion/",
	"github.com/ipfs/", "github.com/ipld/", "github.com/dialtrap/dialtrap/internal/peer ",
}

// deps lists the packages (with their modules) that go build links into dialtrap with tags.
func deps(t *testing.T, tags string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-tags", tags,
		"-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps -tags %q: %v\n%s", tags, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func p2pDeps(lines []string) []string {
	var found []string
	for _, l := range lines {
		for _, p := range p2pOnly {
			if strings.HasPrefix(l+" ", p) || strings.Contains(l, " "+p) {
				found = append(found, l)
				break
			}
		}
	}
	return found
}

// go build -tags nop2p ./cmd/dialtrap links no libp2p code at all; the default build does
// (so that this test can tell them apart).
func TestNoP2PBuildLinksNoLibp2p(t *testing.T) {
	if found := p2pDeps(deps(t, "nop2p")); len(found) > 0 {
		t.Errorf("-tags nop2p links %d peer-to-peer packages, e.g.:\n%s", len(found), strings.Join(found[:min(len(found), 20)], "\n"))
	}
	def := deps(t, "")
	found := p2pDeps(def)
	for _, want := range []string{"github.com/libp2p/go-libp2p ", "github.com/dialtrap/dialtrap/internal/peer "} {
		if !strings.Contains(strings.Join(found, "\n")+"\n", want) {
			t.Errorf("the default build does not link %s: is peer-to-peer still wired in?", want)
		}
	}
	if len(found) < 50 {
		t.Errorf("the default build links %d peer-to-peer packages, want libp2p's many", len(found))
	}
}

// -V says whether the binary has peer-to-peer support; the default build's line is unchanged.
func TestVersionLineSaysNoP2P(t *testing.T) {
	var out, errOut strings.Builder
	if code := run([]string{"-V"}, &out, &errOut); code != exitOK {
		t.Fatalf("-V: exit %d: %s", code, errOut.String())
	}
	line := strings.TrimSpace(out.String())
	if !strings.HasPrefix(line, "dialtrap "+version+" (commit ") || !strings.HasSuffix(line, ")") {
		t.Errorf("-V: %q", line)
	}
	if got := strings.HasSuffix(line, ", nop2p)"); got != !node.P2PBuilt {
		t.Errorf("-V: %q: says nop2p %v, but this build has p2p %v", line, got, node.P2PBuilt)
	}
}

// `dialtrap peers` reads another node's report in either build: its types (peerinfo) need no
// libp2p.
func TestPeersCommandReadsAReport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Powered-By", "dialtrap")
		if r.URL.Path != "/peers" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"peer_id": "12D3KooWTest", "addresses": ["/ip4/127.0.0.1/tcp/4222/p2p/12D3KooWTest"],
			"peers_total": 1, "peers": [{"peer_id": "12D3KooWOther", "addresses": ["/ip4/127.0.0.1/tcp/5000"],
			"in_topic": true, "trusted": true, "events_received": 7, "direction": "inbound"}],
			"events_published": 3, "events_received": 7, "events_rejected": {"signature": 2}, "min_sightings": 1}`))
	}))
	defer srv.Close()
	var out, errOut strings.Builder
	if code := run([]string{"peers", "--api-url", srv.URL}, &out, &errOut); code != exitOK {
		t.Fatalf("peers: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"peer ID     12D3KooWTest", "published 3, received 7", "refused     signature 2",
		"peers       1", "12D3KooWOther", "inbound", "/ip4/127.0.0.1/tcp/5000"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("peers output lacks %q:\n%s", want, out.String())
		}
	}
}

// A malformed peer address is a usage error (exit 2) found before anything starts, in either
// build.
func TestMalformedPeerAddressesAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"-R", "-p", "-b", "/ip4/192.0.2.1/tcp/4222"},
		{"-R", "-p", "-b", "nonsense"},
		{"-R", "-p", "--p2p-addr", "/ip9/x"},
	} {
		var out, errb bytes.Buffer
		if code := run(append(args, "--data-dir", t.TempDir()), &out, &errb); code != exitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, code, exitUsage, errb.String())
		}
	}
}

// dialtrap peers prints the OpenDHT bridge's report, alone when -p is off.
func TestPeersPrintsOpenDHT(t *testing.T) {
	var b strings.Builder
	printPeers(&b, peerinfo.Report{OpenDHT: &peerinfo.OpenDHT{NodeID: "6739661e", Port: 4222, Key: "bad_actors",
		KeyHash: "14d3", Nodes: 3, Received: 5, Accepted: 2, Refused: map[string]uint64{"schema": 2, "timestamp": 1}}})
	out := b.String()
	for _, want := range []string{"node 6739661e on UDP port 4222, 3 nodes", "received 5, accepted 2", "refused     schema 2, timestamp 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "peer ID") {
		t.Errorf("printed a libp2p part for a node without -p:\n%s", out)
	}
}
