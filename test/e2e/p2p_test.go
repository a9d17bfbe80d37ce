package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var p2pAddrRe = regexp.MustCompile(`/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+`)

// A probe captured by node A reaches node B over libp2p and is served by B's API; node C,
// without -p, neither sends nor receives anything.
func TestP2PProbeOnOneNodeIsKnownOnItsPeer(t *testing.T) {
	need(t, "sipp")
	loop := []string{"--p2p-addr", "/ip4/127.0.0.1/tcp/0"}
	a := startNode(t, nodeOpts{args: append([]string{"-r", "-p"}, loop...)})
	boot := p2pAddrRe.FindString(a.log())
	if boot == "" {
		t.Fatalf("node A logged no p2p address:\n%s", a.log())
	}
	apiB, apiC := freePort(t), freePort(t)
	b := startNode(t, nodeOpts{args: append([]string{"-p", "-b", boot, "-a", "--api-addr", fmt.Sprintf("127.0.0.1:%d", apiB)}, loop...)})
	c := startNode(t, nodeOpts{args: []string{"-a", "--api-addr", fmt.Sprintf("127.0.0.1:%d", apiC)}})
	if strings.Contains(c.log(), "p2p") {
		t.Errorf("node C without -p mentions p2p:\n%s", c.log())
	}
	time.Sleep(2 * time.Second) // the topic mesh forms before the first publish

	const number = "0046812118599"
	sippCalls(t, a, 1, number)
	b1 := api{t, fmt.Sprintf("http://127.0.0.1:%d", apiB), ""}
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, _, body := b1.get("/numbers/" + number)
		if status == http.StatusOK && strings.Contains(body, number) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node B never learned the number node A captured: %d %s\nA:\n%s\nB:\n%s", status, body, tail(a.log(), 2000), tail(b.log(), 2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status, _, _ := (api{t, fmt.Sprintf("http://127.0.0.1:%d", apiC), ""}).get("/numbers/" + number); status != http.StatusNotFound {
		t.Errorf("node C (no -p) knows the number: status %d", status)
	}
	// B stored A's events as A made them (same node id and uuid), marked as from a peer.
	a.stop()
	b.stop()
	fromA := map[string]string{}
	for _, e := range a.events() {
		fromA[e.UUID] = e.NodeID
	}
	got := 0
	for _, e := range b.events() {
		if id, ok := fromA[e.UUID]; ok {
			got++
			if id != e.NodeID || !e.FromPeer {
				t.Errorf("B's copy of %s: node %s from_peer %v, A's node %s", e.UUID, e.NodeID, e.FromPeer, id)
			}
		}
	}
	if got == 0 || got != len(fromA) {
		t.Errorf("B holds %d of A's %d events", got, len(fromA))
	}
}
