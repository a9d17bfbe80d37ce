package e2e

import (
	"context"
	bin "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dialtrap/dialtrap/internal/block"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// The addresses of the test's network: public-looking ones, so that the default never-block
// ranges (private, documentation, loopback) stay on as operators run them. They exist only in
// the namespaces the test makes; nothing leaves them.
const (
	netNode    = "45.77.88.1" // the node's bridge, in nsN
	netProber  = "45.77.88.2" // a scanner, in nsP
	netAllowed = "45.77.88.4" // a second address of nsP, on --never-block
	netVictim  = "45.77.88.3" // nsV: forged as a source by nsP, later a scanner itself
	netVictim2 = "45.77.88.5" // a second address of nsV
	// Long enough that an address blocked in step 3 is still blocked when step 6 probes the
	// restarted node, however slowly a loaded machine runs steps 4 and 5.
	fwTTL       = 30 * time.Second
	preloaded   = 3000 // verified sources already stored, so a full reload is measurable
	preloadBase = "46.%d.%d.%d"
)

// fwNet is the test network: nsN holds a bridge the others hang on.
type fwNet struct {
	n, p, v *testutil.Netns
}

func newFwNet(t *testing.T) fwNet {
	t.Helper()
	need(t, "ip", "nft", "sipp")
	if os.Geteuid() != 0 {
		t.Skip("firewall tests make network namespaces and nftables sets: run them as root (make test does in CI)")
	}
	f := fwNet{n: testutil.NewNetns(t, "fwN"), p: testutil.NewNetns(t, "fwP"), v: testutil.NewNetns(t, "fwV")}
	f.n.Run(t, "", "ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0")
	f.n.Run(t, "", "ip", "addr", "add", netNode+"/24", "dev", "br0")
	f.n.Run(t, "", "ip", "link", "set", "br0", "up")
	for i, c := range []struct {
		ns    *testutil.Netns
		addrs []string
	}{{f.p, []string{netProber, netAllowed}}, {f.v, []string{netVictim, netVictim2}}} {
		port := fmt.Sprintf("port%d", i)
		c.ns.Run(t, "", "ip", "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", f.n.Name)
		f.n.Run(t, "", "ip", "link", "set", port, "master", "br0", "up")
		for _, a := range c.addrs {
			c.ns.Run(t, "", "ip", "addr", "add", a+"/24", "dev", "eth0")
		}
		c.ns.Run(t, "", "ip", "link", "set", "eth0", "up")
	}
	return f
}

// sippCall runs one INVITE (answered 100, 404, then ACKed: the ACK echoes the node's To tag)
// from local to the node; it reports whether the call completed.
func sippCall(t *testing.T, ns *testutil.Netns, local, transport, number string, timeout time.Duration) (bool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", number,
		"-m", "1", "-t", transport, "-i", local, "-p", "5070", "-nostdin", "-timeout", fmt.Sprint(int(timeout.Seconds())), "-timeout_error",
		"-max_retrans", "1", "-recv_timeout", fmt.Sprint(timeout.Milliseconds()), netNode+":5060")
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

// apiGet asks a node's API from inside its namespace; the body is decoded when it is JSON.
func apiGet(t *testing.T, ns *testutil.Netns, addr, path string) (int, string) {
	t.Helper()
	resp, err := ns.HTTPClient().Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func lookupIP(t *testing.T, ns *testutil.Netns, addr, ip string) map[string]any {
	t.Helper()
	status, body := apiGet(t, ns, addr, "/ip-addresses/"+ip)
	if status != 200 {
		return nil
	}
	var m map[string]any
	json.Unmarshal([]byte(body), &m)
	return m
}

func inSet(ns *testutil.Netns, ip string) bool {
	_, err := ns.Try("", "nft", "get", "element", "inet", "dialtrap", "blocklist4", "{ "+ip+" }")
	return err == nil
}

// spoof sends UDP datagrams with a forged source address from inside ns, through a raw socket.
func spoof(t *testing.T, ns *testutil.Netns, src, dst netip.AddrPort, payloads []string) {
	t.Helper()
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatalf("raw socket: %v", err)
	}
	defer unix.Close(fd)
	for i, p := range payloads {
		udp := make([]byte, 8+len(p))
		bin.BigEndian.PutUint16(udp[0:], src.Port())
		bin.BigEndian.PutUint16(udp[2:], dst.Port())
		bin.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
		copy(udp[8:], p) // checksum 0: none, as IPv4 allows
		ip := make([]byte, 20, 20+len(udp))
		ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
		bin.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		bin.BigEndian.PutUint16(ip[4:], uint16(1000+i))
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(bin.BigEndian.Uint16(ip[j:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		bin.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		if err := unix.Sendto(fd, append(ip, udp...), 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
			t.Fatalf("send forged datagram: %v", err)
		}
	}
}

// agent runs dialtrap block inside ns until the test ends.
type agent struct {
	cmd   *exec.Cmd
	state string
	out   testutil.SyncBuffer
}

func (a *agent) log() string { return a.out.String() }

func (a *agent) nodeState(t *testing.T) block.NodeState {
	t.Helper()
	s, err := block.ReadState(a.state)
	if err != nil || len(s.Nodes) != 1 {
		return block.NodeState{}
	}
	return *s.Nodes[0]
}

// The whole protection path between network namespaces: a node, a scanner beside it, a
// victim whose address the scanner forges, and the agent next to the node's firewall.
func TestFirewallInNamespaces(t *testing.T) {
	f := newFwNet(t)
	dir := t.TempDir()
	// A node that has seen many sources already: a full reload would cost a lot of bytes.
	// They are stamped a minute ahead so that they outlive the test's short TTL: their
	// expiries would otherwise flood the stream while the node restarts.
	var lines []string
	for i := range preloaded {
		e := event.New(event.Origin{NodeID: "n", Method: event.Responsive, Transport: event.TCP,
			Source: netip.MustParseAddrPort(fmt.Sprintf(preloadBase+":5060", i>>16, (i>>8)&255, i&255)),
			Dest:   netip.MustParseAddrPort(netNode + ":5060"), Verified: true}, time.Now().Add(time.Minute), "0046812118532", "INVITE", "friendly-scanner", []byte("INVITE"))
		b, _ := e.MarshalLine()
		lines = append(lines, string(b))
	}
	preload := filepath.Join(t.TempDir(), "seen.jsonl")
	os.WriteFile(preload, []byte(strings.Join(lines, "")), 0o600)
	if code, _, errOut := dialtrap(t, "import", "--data-dir", dir, preload); code != 0 {
		t.Fatalf("import: %s", errOut)
	}
	const api, listenerAPI = "127.0.0.1:8082", "127.0.0.1:8083"
	n := startNode(t, nodeOpts{dir: dir, netns: f.n.Name, args: []string{"-r", "-a", "--api-addr", api,
		"--sip-addr", "0.0.0.0:5060", "--sip-tls=false", "--never-block", netAllowed,
		"-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/4001"}})

	ag := &agent{state: filepath.Join(t.TempDir(), "block-state.json")}
	ag.cmd = exec.Command("ip", "netns", "exec", f.n.Name, binary, "block", "--node", "http://"+api,
		"--ttl", fwTTL.String(), "--state-file", ag.state, "-v")
	ag.cmd.Stdout, ag.cmd.Stderr = &ag.out, &ag.out
	if err := ag.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ag.cmd.ProcessState == nil {
			ag.cmd.Process.Signal(unix.SIGTERM)
			ag.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("agent log:\n%s\nnode log:\n%s", ag.log(), n.log())
		}
	})
	testutil.Eventually(t, "the agent loads the node's set", 30*time.Second, func() bool {
		return ag.nodeState(t).FullSyncs == 1 && inSet(f.n, fmt.Sprintf(preloadBase, 0, 11, 183))
	})
	full := ag.nodeState(t)

	// 1. A scanner's INVITE over UDP: answered, ACKed with the node's tag (proven), blocked
	// soon after the call's end (well under a second on an idle machine: the delay is logged,
	// not asserted, as a loaded CI machine can stretch it).
	if ok, out := sippCall(t, f.p, netProber, "u1", "0046812118599", 5*time.Second); !ok {
		t.Fatalf("the scanner's call failed before it was blocked:\n%s", tail(out, 1500))
	}
	called := time.Now()
	testutil.Eventually(t, "the scanner is in the nft set", 10*time.Second, func() bool { return inSet(f.n, netProber) })
	t.Logf("the scanner was in the set %s after its call ended", time.Since(called).Round(time.Millisecond))
	// Its next packets are dropped: the call fails, and the rule counts them.
	if ok, _ := sippCall(t, f.p, netProber, "u1", "0046812118599", 2*time.Second); ok {
		t.Fatal("the blocked scanner's call still completed")
	}
	if chain := f.n.Run(t, "", "nft", "list", "chain", "inet", "dialtrap", "input"); !strings.Contains(chain, "@blocklist4 counter packets") ||
		strings.Contains(chain, "@blocklist4 counter packets 0 ") {
		t.Errorf("the drop rule counted nothing:\n%s", chain)
	}

	// 2. Forged probes carrying the victim's address: recorded, unproven, in no default feed
	// and not in the set.
	var forged []string
	for i := range 5 {
		forged = append(forged, fmt.Sprintf("INVITE sip:0046812118600@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s:5060;branch=z9hG4bK-f%d\r\n"+
			"From: <sip:100@%s>;tag=f%d\r\nTo: <sip:0046812118600@%s>\r\nCall-ID: forged-%d\r\nCSeq: 1 INVITE\r\n"+
			"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n", netNode, netVictim, i, netVictim, i, netNode, i))
	}
	spoof(t, f.p, netip.MustParseAddrPort(netVictim+":5060"), netip.MustParseAddrPort(netNode+":5060"), forged)
	// The first is counted at once, the four alike folded into one event a window later.
	testutil.Eventually(t, "the forged probes are recorded", 5*time.Second, func() bool {
		m := lookupIP(t, f.n, api, netVictim)
		return m != nil && m["seen_count"] == "5"
	})
	if m := lookupIP(t, f.n, api, netVictim); m["verified_count"] != 0.0 || m["seen_count"] != "5" {
		t.Errorf("the forged source: %v, want 5 sightings, none verified", m)
	}
	// 3. An allowlisted address that probes over TCP (proven), dialling 112, then the scanner's
	// second address dialling 911 (its other address is not blocked).
	if ok, out := sippCall(t, f.p, netAllowed, "t1", "112", 5*time.Second); !ok {
		t.Fatalf("the allowlisted address's call: %s", tail(out, 1500))
	}
	if m := lookupIP(t, f.n, api, netAllowed); m == nil || m["verified_count"] == 0.0 {
		t.Errorf("the allowlisted address is recorded as proven: %v", m)
	}
	if ok, out := sippCall(t, f.v, netVictim2, "u1", "911", 5*time.Second); !ok {
		t.Fatalf("911 call: %s", tail(out, 1500))
	}
	testutil.Eventually(t, "the 911 caller is blocked", 10*time.Second, func() bool { return inSet(f.n, netVictim2) })
	_, plain := apiGet(t, f.n, api, "/feeds/ip-addresses")
	_, anyFeed := apiGet(t, f.n, api, "/feeds/ip-addresses?verified=any&format=nft")
	_, numbers := apiGet(t, f.n, api, "/feeds/numbers?verified=any")
	for _, c := range []struct {
		feed, what string
		has        bool
	}{
		{plain, netProber, true}, {plain, netVictim + "\n", false}, {plain, netAllowed, false},
		{anyFeed, netVictim + " timeout", false}, {anyFeed, netAllowed, false},
		{numbers, "0046812118599", true}, {numbers, "0046812118532", true}, {numbers, "112\n", false}, {numbers, "911\n", false},
	} {
		if strings.Contains(c.feed, c.what) != c.has {
			t.Errorf("feed has %q: %v, want %v", strings.TrimSpace(c.what), !c.has, c.has)
		}
	}
	if !strings.Contains(anyFeed, netVictim) {
		t.Error("verified=any leaves out the forged source: it is recorded, only unproven")
	}
	if inSet(f.n, netVictim) || inSet(f.n, netAllowed) {
		t.Error("a forged or allowlisted source is in the nft set")
	}

	// 4. The victim itself scans: now proven, and blocked.
	if ok, out := sippCall(t, f.v, netVictim, "u1", "0046812118601", 5*time.Second); !ok {
		t.Fatalf("the victim's own call: %s", tail(out, 1500))
	}
	testutil.Eventually(t, "the real scanner at the forged address is blocked", 10*time.Second, func() bool { return inSet(f.n, netVictim) })

	// 5. A peer that catches up gets the proven sightings only: not the forged ones, not the
	// allowlisted address.
	l := startNode(t, nodeOpts{netns: f.n.Name, args: []string{"-R", "-a", "--api-addr", listenerAPI,
		"-p", "--p2p-addr", "/ip4/127.0.0.1/tcp/0", "-b", n.p2p[0]}})
	testutil.Eventually(t, "the peer catches up with the scanner", 20*time.Second, func() bool { return lookupIP(t, f.n, listenerAPI, netProber) != nil })
	testutil.Eventually(t, "the peer catches up with the victim's own scan", 10*time.Second, func() bool { return lookupIP(t, f.n, listenerAPI, netVictim) != nil })
	own := lookupIP(t, f.n, api, netVictim)
	peerSeen := lookupIP(t, f.n, listenerAPI, netVictim)
	if peerSeen["seen_count"] != fmt.Sprint(own["verified_count"]) {
		t.Errorf("the peer saw the victim %v times; the node has %v proven sightings (and 5 forged): forged ones were shared", peerSeen["seen_count"], own["verified_count"])
	}
	if lookupIP(t, f.n, listenerAPI, netAllowed) != nil {
		t.Error("the allowlisted address reached a peer")
	}
	l.stop()

	// 6. The node dies mid-stream and comes back: the agent resumes from its cursor.
	before := ag.nodeState(t)
	if !inSet(f.n, netVictim2) {
		t.Fatalf("the 911 caller's element expired before the restart: steps 4 and 5 took longer than the TTL (%s)", fwTTL)
	}
	n.kill()
	n.start()
	if ok, _ := sippCall(t, f.v, netVictim2, "t1", "0046812118602", 2*time.Second); ok {
		t.Error("a blocked address reached the restarted node over TCP")
	}
	testutil.Eventually(t, "the agent is in step with the restarted node", 15*time.Second, func() bool {
		s := ag.nodeState(t)
		return s.Reconnects > before.Reconnects && s.Connected && s.LastSync.After(before.LastSync)
	})
	after := ag.nodeState(t)
	t.Logf("full sync %d bytes; the node's restart and the resume %d bytes", full.Bytes, after.Bytes-before.Bytes)
	if after.FullSyncs != 1 || after.Bytes-before.Bytes > full.Bytes/20 {
		t.Errorf("after the node's restart: %d full syncs, %d bytes against %d for the whole set", after.FullSyncs, after.Bytes-before.Bytes, full.Bytes)
	}

	// 7. The TTL runs out: the scanner gets through again.
	testutil.Eventually(t, "the scanner's element expires", fwTTL+10*time.Second, func() bool { return !inSet(f.n, netProber) })
	if ok, out := sippCall(t, f.p, netProber, "u1", "0046812118599", 5*time.Second); !ok {
		t.Errorf("after the timeout the scanner's call fails:\n%s", tail(out, 1500))
	}
	// Nothing else touched: the status command reads it all back.
	out, err := f.n.Try("", binary, "block", "status", "--state-file", ag.state)
	if err != nil || !strings.Contains(out, "http://"+api) || !strings.Contains(out, "addresses") {
		t.Errorf("block status: %v\n%s", err, out)
	}
	t.Logf("block status:\n%s", out)

	// SIGTERM: the agent exits 0 and leaves its set in place; with --flush-on-exit it
	// removes its table.
	ag.cmd.Process.Signal(unix.SIGTERM)
	if err := ag.cmd.Wait(); err != nil {
		t.Errorf("agent after SIGTERM: %v\n%s", err, ag.log())
	}
	if _, err := f.n.Try("", "nft", "list", "table", "inet", "dialtrap"); err != nil || !inSet(f.n, netVictim) {
		t.Errorf("the set did not outlive the agent: %v", err)
	}
	flusher := &agent{state: ag.state}
	flusher.cmd = exec.Command("ip", "netns", "exec", f.n.Name, binary, "block", "--node", "http://"+api,
		"--ttl", fwTTL.String(), "--state-file", ag.state, "--flush-on-exit", "-v")
	flusher.cmd.Stdout, flusher.cmd.Stderr = &flusher.out, &flusher.out
	if err := flusher.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "the second agent is in step", 10*time.Second, func() bool {
		return strings.Contains(flusher.log(), "in step with the node")
	})
	flusher.cmd.Process.Signal(unix.SIGTERM)
	if err := flusher.cmd.Wait(); err != nil {
		t.Errorf("agent with --flush-on-exit after SIGTERM: %v\n%s", err, flusher.log())
	}
	if _, err := f.n.Try("", "nft", "list", "table", "inet", "dialtrap"); err == nil {
		t.Error("--flush-on-exit left the table")
	}
}
