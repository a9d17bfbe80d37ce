package e2e

// Tests that run the configurations the operator guides (docs/guides) show, as they are
// shown: each test first checks that the guide still holds its testdata file, so the two
// cannot drift apart.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// guideHolds fails the test unless the guide (a file in docs/guides) contains text, a
// configuration this test runs.
func guideHolds(t *testing.T, guide, what, text string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "guides", guide))
	if err != nil {
		t.Fatalf("read the guide: %v", err)
	}
	if !strings.Contains(string(b), text) {
		t.Fatalf("docs/guides/%s no longer shows %s as this test runs it; copy it there again:\n%s", guide, what, text)
	}
}

// attackFrom makes one SIPp INVITE call over UDP from local (an address of the namespace)
// to a responsive node at target: the ACK echoes the node's To tag, so the source is proven.
func attackFrom(t *testing.T, ns *testutil.Netns, local, target, number string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", number,
		"-m", "1", "-t", "u1", "-i", local, "-p", fmt.Sprint(freePort(t)), "-nostdin", "-timeout", "10", "-timeout_error",
		"-max_retrans", "1", target)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sipp from %s: %v\n%s", local, err, out)
	}
}

// udpEcho answers every datagram to addr (inside ns) with the same bytes, until the test ends.
func udpEcho(t *testing.T, ns *testutil.Netns, addr string) {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from) // a blackholed source gets nothing back
		}
	}()
}

// echoed says whether a datagram sent from local (inside ns) to the echo server at to comes back.
func echoed(t *testing.T, ns *testutil.Netns, local, to string) bool {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(local)}}
		c, err = d.Dial("udp", to)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range 3 {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 16)
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return true
		} else if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatal(err)
		}
	}
	return false
}

// TestGuideBIRDRouter runs the BIRD configuration of docs/guides/bgp.md, as it is there, on a
// router in a network namespace of its own, linked to a node's namespace by a veth pair with
// the guide's addresses. Two attackers (IPv4 and IPv6) probe the node; the node's speaker
// announces them; the router takes the routes through its import filter, resolves them to the
// discard next hops and puts them in its kernel table as blackholes, and its answers to the
// attackers stop; when the node stops, the routes go.
func TestGuideBIRDRouter(t *testing.T) {
	need(t, "sipp", "bird", "birdc")
	conf, err := os.ReadFile("testdata/guides/bird.conf")
	if err != nil {
		t.Fatal(err)
	}
	guideHolds(t, "bgp.md", "the BIRD configuration (test/e2e/testdata/guides/bird.conf)", string(conf))

	const attacker4, attacker6 = "198.18.0.31", "2001:db8:66::31"
	trap := testutil.NewNetns(t, "gtrap")
	router := testutil.NewNetns(t, "grtr")
	trap.Run(t, "", "ip", "link", "add", "veth-r", "type", "veth", "peer", "name", "veth-t", "netns", router.Name)
	for _, c := range []struct {
		ns       *testutil.Netns
		dev      string
		addr     []string
		routeTo  []string // attackers' prefixes, via the node (router side)
		attacker []string // on the node's loopback (node side)
	}{
		{ns: trap, dev: "veth-r", addr: []string{"192.0.2.10/24", "2001:db8:1::10/64"}, attacker: []string{attacker4 + "/32", attacker6 + "/128"}},
		{ns: router, dev: "veth-t", addr: []string{"192.0.2.2/24", "2001:db8:1::2/64"}, routeTo: []string{"198.18.0.0/15 via 192.0.2.10", "2001:db8:66::/48 via 2001:db8:1::10"}},
	} {
		for _, a := range c.addr {
			c.ns.Run(t, "", "ip", "addr", "add", a, "dev", c.dev, "nodad")
		}
		c.ns.Run(t, "", "ip", "link", "set", c.dev, "up")
		for _, a := range c.attacker {
			c.ns.Run(t, "", "ip", "addr", "add", a, "dev", "lo")
		}
		for _, r := range c.routeTo {
			c.ns.Run(t, "", append([]string{"ip", "route", "add"}, strings.Fields(r)...)...)
		}
	}

	// The router: BIRD with the guide's file, its own control socket and pid file.
	dir := t.TempDir()
	sock := filepath.Join(dir, "bird.ctl")
	cfg := filepath.Join(dir, "bird.conf")
	os.WriteFile(cfg, conf, 0o644)
	bird := router.Cmd("bird", "-f", "-c", cfg, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	birdOut := &testutil.SyncBuffer{}
	bird.Stdout, bird.Stderr = birdOut, birdOut
	if err := bird.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bird.Process.Kill()
		bird.Wait()
		if t.Failed() {
			t.Logf("bird:\n%s", birdOut.String())
		}
	})
	birdc := func(cmd string) string {
		out, _ := exec.Command("birdc", "-s", sock, cmd).CombinedOutput()
		return string(out)
	}
	kernelRoutes := func(family string) string {
		return router.Run(t, "", "ip", family, "route", "show", "proto", "bird")
	}

	// The echo server on the router: before the blackhole, both attackers hear back from it.
	udpEcho(t, router, "192.0.2.2:7")
	udpEcho(t, router, "[2001:db8:1::2]:7")
	testutil.Eventually(t, "the attackers hearing back from the router before anything is announced", 10*time.Second, func() bool {
		return echoed(t, trap, attacker4, "192.0.2.2:7") && echoed(t, trap, attacker6, "[2001:db8:1::2]:7")
	})

	// The node, with the guide's speaker flags (the defaults would never block these test ranges).
	n := startNode(t, nodeOpts{netns: trap.Name, args: []string{"-r", "-a", "--never-block-defaults=false",
		"--bgp-asn", "64512", "--bgp-router-id", "192.0.2.10", "--bgp-neighbor", "192.0.2.2 as 64512"}})
	testutil.Eventually(t, "the router's session with the speaker", 30*time.Second, func() bool {
		return strings.Contains(birdc("show protocols dialtrap"), "Established")
	})
	attackFrom(t, trap, attacker4, fmt.Sprintf("127.0.0.1:%d", n.port), "0046812345678")
	attackFrom(t, trap, attacker6, fmt.Sprintf("[::1]:%d", n.port), "0046812345679")
	testutil.Eventually(t, "both attackers blackholed in the router's kernel table", 15*time.Second, func() bool {
		return strings.Contains(kernelRoutes("-4"), "blackhole "+attacker4+" ") && strings.Contains(kernelRoutes("-6"), "blackhole "+attacker6+" ")
	})
	if routes := birdc("show route all protocol dialtrap"); !strings.Contains(routes, "(65535,666)") {
		t.Errorf("the router's routes lack the BLACKHOLE community:\n%s", routes)
	}
	if echoed(t, trap, attacker4, "192.0.2.2:7") || echoed(t, trap, attacker6, "[2001:db8:1::2]:7") {
		t.Errorf("an attacker still hears back from the router:\n%s\n%s", kernelRoutes("-4"), kernelRoutes("-6"))
	}

	// Stopping the speaker ends the session: the router drops the routes, and answers again.
	n.stop()
	testutil.Eventually(t, "the blackholes gone once the node stopped", 15*time.Second, func() bool {
		return kernelRoutes("-4") == "" && kernelRoutes("-6") == ""
	})
	if !echoed(t, trap, attacker4, "192.0.2.2:7") {
		t.Error("the IPv4 attacker still blackholed after the node stopped")
	}
}
