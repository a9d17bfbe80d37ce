package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/postgres"
	"github.com/dialtrap/dialtrap/internal/testutil"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

// sendProbes sends n probes, each dialling another number, from the loopback address src to
// a node, paced so that no datagram is lost on the way.
func sendProbes(t *testing.T, n *node, src string, first, count int) {
	t.Helper()
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: n.port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := first; i < first+count; i++ {
		if _, err := c.Write(invite(fmt.Sprintf("00467%08d", i))); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// Five nodes write one PostgreSQL database at once; the database restarts in the middle.
// While it is away each node spools to its own disk, and catches up once it is back: every
// probe is stored once, counted once, and a lookup on any node finds what another captured.
func TestFleetOnOnePostgreSQLSurvivesItsRestart(t *testing.T) {
	srv := pgtest.Get(t)
	url := srv.Database(t)
	const nodes, perPhase = 5, 400
	var fleet []p2pNode
	for range nodes {
		n := startP2PNode(t, "", "--store", url, "--sip-tls=false", "--fold-window", "0")
		defer n.kill()
		fleet = append(fleet, n)
	}
	src := func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }
	phase := func(p int) {
		for i, n := range fleet {
			sendProbes(t, n.node, src(i), p*perPhase, perPhase)
		}
	}
	phase(0)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	phase(1) // the database is away: spooled
	// Back only once every node has met the outage (a write that came after the restart
	// would not spool, and the test would prove nothing for that node).
	testutil.Eventually(t, "every node spools", 30*time.Second, func() bool {
		for _, n := range fleet {
			if !strings.Contains(n.log(), "store write failed: events go to the disk spool") {
				return false
			}
		}
		return true
	})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	phase(2)
	const total = nodes * 3 * perPhase
	s, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testutil.Eventually(t, "every node catches up", 60*time.Second, func() bool {
		n, err := s.CountEvents(context.Background())
		return err == nil && n >= total
	})
	// A lookup on the first node finds what the last one captured.
	status, _, body := fleet[0].api.get("/ip-addresses/" + src(nodes-1))
	var m map[string]any
	json.Unmarshal([]byte(body), &m)
	if status != 200 || m["seen_count"] != strconv.Itoa(3*perPhase) {
		t.Errorf("node 1 on the source node %d saw: %d %s, want %d sightings", nodes, status, body, 3*perPhase)
	}
	for i, n := range fleet {
		n.stop()
		// Its writes failed while the database was away, went to its spool, and were
		// written from there once it was back.
		if !strings.Contains(n.log(), "store spool: caught up") {
			t.Errorf("node %d never spooled through the outage:\n%s", i+1, tail(n.log(), 3000))
		}
		if received, _ := captureTotals(t, n.node); received != 3*perPhase {
			t.Errorf("a node read %d probes, want %d", received, 3*perPhase)
		}
	}
	if n, err := s.CountEvents(context.Background()); err != nil || n != total {
		t.Errorf("%d events stored (%v), want %d: nothing lost, nothing doubled", n, err, total)
	}
	methods, _, err := s.Top(context.Background(), store.SIPMethods, "", 0)
	if err != nil || len(methods) != 1 || methods[0].Count != total {
		t.Errorf("statistics count %v (%v), want %d", methods, err, total)
	}
	for i := range nodes {
		a, ok, err := s.IP(context.Background(), src(i))
		if err != nil || !ok || a.Count != 3*perPhase || a.Local != 3*perPhase {
			t.Errorf("source of node %d: %+v (%v %v), want %d sightings, all local", i+1, a, ok, err, 3*perPhase)
		}
	}
}
