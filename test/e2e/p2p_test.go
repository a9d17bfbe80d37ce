package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/peer"
)

var p2pAddrRe = regexp.MustCompile(`/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+`)

// p2pNode is a node with -a on a loopback port of its own.
type p2pNode struct {
	*node
	api api
}

func startP2PNode(t *testing.T, dir string, args ...string) p2pNode {
	t.Helper()
	port := freePort(t)
	args = append([]string{"-a", "--api-addr", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	n := startNode(t, nodeOpts{dir: dir, args: args})
	return p2pNode{n, api{t, fmt.Sprintf("http://127.0.0.1:%d", port), ""}}
}

var loopP2P = []string{"-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0"}

func (n p2pNode) report() peer.Report {
	n.t.Helper()
	status, _, body := n.api.get("/peers")
	var r peer.Report
	if status != http.StatusOK || json.Unmarshal([]byte(body), &r) != nil {
		n.t.Fatalf("/peers: %d %s", status, body)
	}
	return r
}

// lookup returns a lookup's status and its JSON body.
func (n p2pNode) lookup(path string) (int, map[string]any) {
	n.t.Helper()
	status, _, body := n.api.get(path)
	var doc map[string]any
	json.Unmarshal([]byte(body), &doc)
	return status, doc
}

// The network as operators run it, as separate processes on loopback: a relay node (-R -p -a:
// no SIP, only relays and serves) that the others bootstrap from; SIPp probes on nodes A and
// B reach every sharing node's API, with where each entry was seen; a strict node counts an
// IP only once two peers reported it; a node that trusts A counts A's reports at once; a
// node without -p knows nothing; a node started after the probes catches up; and a restarted
// node keeps its peer ID.
func TestP2PNetwork(t *testing.T) {
	need(t, "sipp")
	relay := startP2PNode(t, "", append([]string{"-R"}, loopP2P...)...)
	boot := p2pAddrRe.FindString(relay.log())
	if boot == "" {
		t.Fatalf("the relay logged no p2p address:\n%s", relay.log())
	}
	if !strings.Contains(relay.log(), "SIP capture is disabled") {
		t.Errorf("the -R node runs SIP listeners:\n%s", relay.log())
	}
	withBoot := append([]string{"-b", boot}, loopP2P...)
	a := startP2PNode(t, "", append([]string{"-r"}, withBoot...)...)
	b := startP2PNode(t, "", append([]string{"-r"}, withBoot...)...)
	c := startP2PNode(t, "", withBoot...)
	strict := startP2PNode(t, "", append([]string{"--p2p-min-sightings", "2"}, withBoot...)...)
	trusting := startP2PNode(t, "", append([]string{"--p2p-min-sightings", "3", "--p2p-trust", a.report().ID}, withBoot...)...)
	alone := startP2PNode(t, "")
	if strings.Contains(alone.log(), "p2p") {
		t.Errorf("the node without -p mentions p2p:\n%s", alone.log())
	}
	if status, _, _ := alone.api.get("/peers"); status != http.StatusNotFound {
		t.Errorf("/peers on the node without -p: %d", status)
	}
	for i, n := range []p2pNode{relay, a, b, c, strict, trusting} {
		waitFor(t, fmt.Sprintf("node %d joins the topic", i), 20*time.Second, func() bool {
			for _, p := range n.report().Peers {
				if p.Topic {
					return true
				}
			}
			return false
		})
	}
	time.Sleep(time.Second) // the mesh settles before the first publish

	const numA, numB = "0046812118599", "0046812118600"
	sippCalls(t, a.node, 1, numA)
	for i, n := range []p2pNode{relay, b, c, trusting} {
		waitFor(t, fmt.Sprintf("node %d learns the number A captured", i), 15*time.Second, func() bool {
			status, _ := n.lookup("/numbers/" + numA)
			return status == http.StatusOK
		})
	}
	if status, doc := a.lookup("/numbers/" + numA); status != http.StatusOK || doc["seen_locally"] != true || doc["seen_by_peers"] != 0.0 {
		t.Errorf("A's own sighting: %d %v", status, doc)
	}
	if status, doc := b.lookup("/numbers/" + numA); status != http.StatusOK || doc["seen_locally"] != false || doc["seen_by_peers"] != 1.0 {
		t.Errorf("B's copy: %d %v", status, doc)
	}
	if _, doc := trusting.lookup("/numbers/" + numA); doc["seen_by_trusted_peers"] != 1.0 {
		t.Errorf("the node that trusts A: %v", doc)
	}
	time.Sleep(time.Second)
	if status, _ := strict.lookup("/ip-addresses/127.0.0.1"); status != http.StatusNotFound {
		t.Errorf("the strict node counts an address one peer reported: %d", status)
	}
	if r := strict.report(); r.Pending == 0 {
		t.Errorf("the strict node holds nothing: %+v", r)
	}

	// B sees the same scanner address: a second peer, so the strict node counts both.
	sippCalls(t, b.node, 1, numB)
	waitFor(t, "the strict node counts the address two peers reported", 15*time.Second, func() bool {
		status, doc := strict.lookup("/ip-addresses/127.0.0.1")
		return status == http.StatusOK && doc["seen_by_peers"] == 2.0
	})
	for _, num := range []string{numA, numB} {
		if status, _ := strict.lookup("/numbers/" + num); status != http.StatusOK {
			t.Errorf("the strict node lacks %s after the second report: %d", num, status)
		}
		if status, _ := alone.lookup("/numbers/" + num); status != http.StatusNotFound {
			t.Errorf("the node without -p knows %s: %d", num, status)
		}
	}

	// A node that joins now catches up on what it missed.
	late := startP2PNode(t, "", withBoot...)
	waitFor(t, "the late node catches up", 20*time.Second, func() bool {
		s1, _ := late.lookup("/numbers/" + numA)
		s2, _ := late.lookup("/numbers/" + numB)
		return s1 == http.StatusOK && s2 == http.StatusOK
	})
	var caughtUp uint64
	for _, p := range late.report().Peers {
		caughtUp += p.CaughtUp
	}
	if caughtUp == 0 {
		t.Errorf("the late node's numbers did not come by catch-up: %+v", late.report())
	}

	// Restart: same key, same peer ID.
	id := b.report().ID
	b.stop()
	if st, err := os.Stat(filepath.Join(b.dir, peer.KeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("node key: %v %v, want mode 0600", st, err)
	}
	b2 := startP2PNode(t, b.dir, append([]string{"-r"}, withBoot...)...)
	if got := b2.report().ID; got != id {
		t.Errorf("peer ID %s after a restart, was %s", got, id)
	}
	if !strings.Contains(b2.log(), "peer_id="+id) {
		t.Errorf("the node does not log its peer ID at start:\n%s", b2.log())
	}

	// The late node stored A's events as A made them, marked as from a peer, with A's
	// signature kept for serving.
	a.stop()
	late.stop()
	fromA := map[string]string{}
	for _, e := range a.events() {
		fromA[e.UUID] = e.NodeID
	}
	got := 0
	for _, e := range late.events() {
		if id, ok := fromA[e.UUID]; ok {
			got++
			if id != e.NodeID || !e.FromPeer || e.Peer == "" || len(e.Sealed) == 0 {
				t.Errorf("late node's copy of %s: node %s from_peer %v peer %q, A's node %s", e.UUID, e.NodeID, e.FromPeer, e.Peer, id)
			}
		}
	}
	if got == 0 || got != len(fromA) {
		t.Errorf("the late node holds %d of A's %d events", got, len(fromA))
	}
}
