package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// bgpNet is a namespace whose loopback also holds the attackers' addresses, from a range
// BIRD takes as routes (it refuses 127/8 prefixes).
func bgpNet(t *testing.T, attackers ...string) *testutil.Netns {
	ns := testutil.NewNetns(t, "bgp")
	for _, a := range attackers {
		ns.Run(t, "", "ip", "addr", "add", a+"/32", "dev", "lo")
	}
	return ns
}

// attack makes one SIPp INVITE call from an address of the namespace's loopback to a
// responsive node over UDP: its ACK echoes the node's To tag, so the source is proven.
func attack(t *testing.T, ns *testutil.Netns, n *node, from, number string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", number, "-m", "1", "-t", "u1",
		"-i", from, "-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "10", "-timeout_error", "-max_retrans", "1",
		fmt.Sprintf("127.0.0.1:%d", n.port))
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sipp from %s: %v\n%s", from, err, out)
	}
}

type bgpStatus struct {
	Announced   int   `json:"announced"`
	Waiting     int   `json:"waiting"`
	RefusedMax  int64 `json:"refused_max_prefixes_total"`
	Allowlisted int64 `json:"allowlisted_total"`
	Expired     int64 `json:"expired_total"`
	Peers       []struct {
		Address string `json:"address"`
		State   string `json:"state"`
	} `json:"peers"`
}

func getBGP(t *testing.T, ns *testutil.Netns, n *node) bgpStatus {
	t.Helper()
	resp, err := ns.HTTPClient().Get("http://" + n.apiAddr + "/bgp")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st bgpStatus
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		t.Fatalf("/bgp: %s", resp.Status)
	}
	return st
}

func hostRoutes(b *testutil.Bird) []string {
	var out []string
	for p := range b.Routes() {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// TestBGPBlackholeNode: a node with --bgp-neighbor announces the sources that attacked it
// to a real BIRD with BLACKHOLE and NO_EXPORT; the cap, a never-block reload (SIGHUP), a
// session reset and expiry behave as an operator expects.
func TestBGPBlackholeNode(t *testing.T) {
	need(t, "sipp", "bird", "birdc")
	ns := bgpNet(t, "198.18.0.11", "198.18.0.12", "198.18.0.13")
	bird := testutil.StartBird(t, testutil.BirdOptions{ASN: 65001, PeerASN: 65000, Netns: ns})
	nb := filepath.Join(t.TempDir(), "never-block.txt")
	os.WriteFile(nb, []byte("# operators\n"), 0o644)
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--never-block-defaults=false", "--never-block", nb,
		"--bgp-asn", "65000", "--bgp-router-id", "127.0.0.1", "--bgp-neighbor", fmt.Sprintf("127.0.0.2 as 65001 port %d", bird.Port),
		"--bgp-max-prefixes", "2", "--bgp-ttl", "40s", "--bgp-community", "64512:666"}, netns: ns.Name})
	bird.WaitFor("the session", 20*time.Second, bird.Established)

	attack(t, ns, n, "198.18.0.11", "900441234567")
	attack(t, ns, n, "198.18.0.12", "900441234568")
	bird.WaitFor("both attackers announced", 10*time.Second, func() bool { return bird.Count() == 2 })
	for p, r := range bird.Routes() {
		for _, c := range []string{"65535:666", "65535:65281", "64512:666"} {
			if !slices.Contains(r.Communities, c) {
				t.Errorf("%s: communities %v lack %s", p, r.Communities, c)
			}
		}
		if r.NextHop != "192.0.2.1" {
			t.Errorf("%s: next hop %s, want the default 192.0.2.1", p, r.NextHop)
		}
	}
	// The cap: a third attacker waits.
	attack(t, ns, n, "198.18.0.13", "900441234569")
	testutil.Eventually(t, "the third attacker waiting", 10*time.Second, func() bool { st := getBGP(t, ns, n); return st.Waiting == 1 && st.RefusedMax >= 1 })
	if got := hostRoutes(bird); !slices.Equal(got, []string{"198.18.0.11/32", "198.18.0.12/32"}) {
		t.Fatalf("router holds %v with a cap of 2", got)
	}
	// The operator allowlists one: SIGHUP withdraws it, and the waiting one takes its place.
	os.WriteFile(nb, []byte("198.18.0.11 # a customer\n"), 0o644)
	n.cmd.Process.Signal(syscall.SIGHUP)
	bird.WaitFor("the allowlisted address withdrawn and the waiting one announced", 10*time.Second, func() bool {
		return slices.Equal(hostRoutes(bird), []string{"198.18.0.12/32", "198.18.0.13/32"})
	})
	if st := getBGP(t, ns, n); st.Allowlisted != 1 || st.Waiting != 0 {
		t.Fatalf("/bgp after the reload: %+v", st)
	}
	// Taken off the list again, it is back in the running: the cap is full, so it waits.
	os.WriteFile(nb, []byte("# nobody\n"), 0o644)
	n.cmd.Process.Signal(syscall.SIGHUP)
	testutil.Eventually(t, "the address taken off the list waiting again", 10*time.Second, func() bool { return getBGP(t, ns, n).Waiting == 1 })
	// A session reset: the router learns the whole set again. The speaker waits up to ~10 s
	// (idle hold, connect retry) before it dials again: the TTL of 40 s keeps the set alive
	// through that on a loaded machine.
	bird.Run("restart trap")
	bird.WaitFor("the set re-announced after a reset", 20*time.Second, func() bool {
		return bird.Established() && slices.Equal(hostRoutes(bird), []string{"198.18.0.12/32", "198.18.0.13/32"})
	})
	// Expiry: 40 s after the last sighting, nothing is left.
	bird.WaitFor("every route withdrawn at expiry", 60*time.Second, func() bool { return bird.Count() == 0 })
	if st := getBGP(t, ns, n); st.Expired < 2 || st.Announced != 0 || len(st.Peers) != 1 || st.Peers[0].State != "established" {
		t.Fatalf("/bgp after expiry: %+v", st)
	}
}

// TestBGPFollower: dialtrap bgp follows a node's change stream and announces what it
// blocks; stopping it ends the session, and the router drops the routes.
func TestBGPFollower(t *testing.T) {
	need(t, "sipp", "bird", "birdc")
	ns := bgpNet(t, "198.18.0.21")
	bird := testutil.StartBird(t, testutil.BirdOptions{ASN: 65000, PeerASN: 65000, Netns: ns})
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--never-block-defaults=false"}, netns: ns.Name})
	dir := t.TempDir()
	cmd := ns.Cmd(binary, "bgp", "-v", "--node", "http://"+n.apiAddr, "--never-block-defaults=false", "--data-dir", dir,
		"--bgp-asn", "65000", "--bgp-router-id", "127.0.0.1", "--bgp-neighbor", fmt.Sprintf("127.0.0.2 as 65000 port %d", bird.Port),
		"--bgp-next-hop", "192.0.2.66")
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("dialtrap bgp:\n%s", out.String())
		}
	})
	bird.WaitFor("the session", 20*time.Second, bird.Established)
	attack(t, ns, n, "198.18.0.21", "0044900123456")
	bird.WaitFor("the attacker announced", 10*time.Second, func() bool { return bird.Count() == 1 })
	if r := bird.Routes()["198.18.0.21/32"]; r.NextHop != "192.0.2.66" || !slices.Contains(r.Communities, "65535:666") {
		t.Fatalf("route %+v", r)
	}
	// bgp status reads the file the speaker writes every 5 s.
	var status string
	testutil.Eventually(t, "bgp status showing the announcement", 10*time.Second, func() bool {
		out, err := exec.Command(binary, "bgp", "status", "--data-dir", dir).CombinedOutput()
		status = string(out)
		return err == nil && strings.Contains(status, "announced   1 of at most 10000")
	})
	for _, want := range []string{"(running)", "127.0.0.2  65000  established", "http://" + n.apiAddr + "  yes"} {
		if !strings.Contains(status, want) {
			t.Errorf("bgp status lacks %q:\n%s", want, status)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("dialtrap bgp exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("dialtrap bgp did not stop on SIGTERM")
	}
	exited <- nil // for the cleanup
	bird.WaitFor("the routes dropped once the speaker stopped", 10*time.Second, func() bool { return bird.Count() == 0 })
}
