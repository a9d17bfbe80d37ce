package e2e

// Tests that run the configurations the operator guides (docs/guides) show, as they are shown:
// the files in testdata/guides are the guides' text (test/docs checks that each guide still
// holds its file), run here against real routers and proxies.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// attackFrom makes one SIPp INVITE call over UDP from local (an address of the namespace ns,
// or of the host when ns is nil) to a responsive node at target: the ACK echoes the node's To
// tag, so the source is proven.
func attackFrom(t *testing.T, ns *testutil.Netns, local, target, number string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"sipp", "-sf", abs(t, "testdata/invite.xml"), "-s", number, "-m", "1", "-t", "u1", "-i", local,
		"-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "10", "-timeout_error", "-max_retrans", "1", target}
	if ns != nil {
		args = append([]string{"ip", "netns", "exec", ns.Name}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sipp from %s: %v\n%s", local, err, out)
	}
}

// udpEcho answers every datagram to addr (inside ns) with the same bytes, until the test
// ends. It counts the datagrams it received.
func udpEcho(t *testing.T, ns *testutil.Netns, addr string) *atomic.Int64 {
	t.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var received atomic.Int64
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			received.Add(1)
			_, _ = pc.WriteTo(buf[:n], from) // a blackholed source gets nothing back
		}
	}()
	return &received
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
// discard next hops and puts them in its kernel table as blackholes: its answers to the
// attackers stop, and with loose reverse-path filtering what the IPv4 attacker sends is dropped
// on the way in; when the node stops, the routes go.
func TestGuideBIRDRouter(t *testing.T) {
	need(t, "sipp", "bird", "birdc")
	conf, err := os.ReadFile("testdata/guides/bird.conf")
	if err != nil {
		t.Fatal(err)
	}

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

	// Loose reverse-path filtering on the router (source-based blackholing, RFC 5635): once
	// an attacker's address is routed to the discard next hop, what it sends is dropped on
	// the way in, not only the router's answers on the way out (IPv4; Linux has no IPv6
	// rp_filter).
	for _, k := range []string{"net.ipv4.conf.all.rp_filter", "net.ipv4.conf.veth-t.rp_filter"} {
		router.Run(t, "", "sysctl", "-qw", k+"=2")
	}
	// The echo server on the router: before the blackhole, both attackers hear back from it.
	received4 := udpEcho(t, router, "192.0.2.2:7")
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
	before := received4.Load()
	if echoed(t, trap, attacker4, "192.0.2.2:7") || echoed(t, trap, attacker6, "[2001:db8:1::2]:7") {
		t.Errorf("an attacker still hears back from the router:\n%s\n%s", kernelRoutes("-4"), kernelRoutes("-6"))
	}
	if got := received4.Load() - before; got != 0 {
		t.Errorf("the router took %d datagrams from the blackholed IPv4 attacker in: loose rp_filter should drop them", got)
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

// renderConfig renders a text/template configuration of testdata/guides with fields.
func renderConfig(t *testing.T, file string, fields map[string]any) string {
	t.Helper()
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "guides", file))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, fields); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// kamailioModulePath is the directory of Kamailio's modules, with http_client among them.
func kamailioModulePath(t *testing.T) string {
	t.Helper()
	for _, pattern := range []string{"/usr/lib/*/kamailio/modules/http_client.so", "/usr/lib/kamailio/modules/http_client.so", "/usr/lib64/kamailio/modules/http_client.so"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return filepath.Dir(m[0])
		}
	}
	t.Fatal("Kamailio's http_client module not found: install kamailio-utils-modules (scripts/test-deps.sh does)")
	return ""
}

// kamailio is a Kamailio proxy on 127.0.0.1:port running a guide's configuration, and the
// phones (SIPp) that call through it.
type kamailio struct {
	t       *testing.T
	dir     string
	proxy   string // its address
	log     *testutil.SyncBuffer
	uasPort int // where the callee answers: calls are placed to sip:NUMBER@127.0.0.1:uasPort
}

// startKamailio runs Kamailio in the foreground with the configuration file (a template of
// testdata/guides) rendered with fields and its own port and module path, until the test ends.
func startKamailio(t *testing.T, file string, fields map[string]any) *kamailio {
	t.Helper()
	need(t, "sipp", "kamailio")
	k := &kamailio{t: t, dir: t.TempDir(), log: &testutil.SyncBuffer{}, uasPort: testutil.FreePort(t, "")}
	port := testutil.FreePort(t, "")
	fields["Port"], fields["ModulePath"] = port, kamailioModulePath(t)
	cfg := filepath.Join(k.dir, "kamailio.cfg")
	os.WriteFile(cfg, []byte(renderConfig(t, file, fields)), 0o644)
	// -DD: stay in the foreground (children are still forked); -E: log to stderr; its own
	// pid file and runtime directory, small memory pools.
	cmd := exec.Command("kamailio", "-f", cfg, "-DD", "-E", "-P", filepath.Join(k.dir, "kamailio.pid"), "-Y", k.dir, "-m", "32", "-M", "8", "-w", k.dir)
	cmd.Stdout, cmd.Stderr = k.log, k.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children go with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		if t.Failed() {
			t.Logf("kamailio:\n%s", tail(k.log.String(), 6000))
		}
	})
	k.proxy = fmt.Sprintf("127.0.0.1:%d", port)
	testutil.Eventually(t, "kamailio answering (405 to an OPTIONS)", 15*time.Second, func() bool {
		select {
		case <-done:
			t.Fatalf("kamailio exited at start:\n%s", k.log.String())
		default:
		}
		c, err := net.Dial("udp", k.proxy)
		if err != nil {
			return false
		}
		defer c.Close()
		lp := c.LocalAddr().(*net.UDPAddr).Port
		id := time.Now().UnixNano()
		fmt.Fprintf(c, "OPTIONS sip:ping@%s SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%d\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\n"+
			"To: <sip:ping@%s>\r\nCall-ID: ping-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", k.proxy, lp, id, k.proxy, id)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		return err == nil && bytes.HasPrefix(buf[:n], []byte("SIP/2.0 405"))
	})
	return k
}

// call places one call from a SIPp phone at from, dialling number through the proxy, with
// the policy agent's Kamailio scenarios (internal/policy/testdata/kamailio). status 200: the
// call must complete at a SIPp callee (which checks that it was placed to 0046812110000);
// otherwise the phone must get that status with a Reason header matching reason. It returns
// how long the phone's call took.
func (k *kamailio) call(name, number, from string, status int, reason string) time.Duration {
	t := k.t
	t.Helper()
	scenarios := filepath.Join("..", "..", "internal", "policy", "testdata", "kamailio")
	tmpl, err := template.ParseFiles(filepath.Join(scenarios, "uac.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	attr := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	target := "127.0.0.1:" + strconv.Itoa(k.uasPort)
	if err := tmpl.Execute(&b, map[string]any{"Name": name, "Target": target, "Status": status, "Reason": attr.Replace(reason)}); err != nil {
		t.Fatal(err)
	}
	scenario := filepath.Join(k.dir, strings.ReplaceAll(name, " ", "-")+".xml")
	os.WriteFile(scenario, b.Bytes(), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var uas *exec.Cmd
	uasOut := &testutil.SyncBuffer{}
	if status == 200 {
		uas = exec.CommandContext(ctx, "sipp", "-sf", abs(t, filepath.Join(scenarios, "uas.xml")), "-m", "1", "-nostdin",
			"-i", "127.0.0.1", "-p", strconv.Itoa(k.uasPort), "-timeout", "20", "-timeout_error")
		uas.Dir = k.dir
		uas.Stdout, uas.Stderr = uasOut, uasOut
		if err := uas.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // let it bind before the call comes
	}
	start := time.Now()
	uac := exec.CommandContext(ctx, "sipp", "-sf", scenario, "-s", number, "-i", from, "-p", strconv.Itoa(testutil.FreePort(t, "")),
		"-m", "1", "-nostdin", "-timeout", "20", "-timeout_error", "-max_retrans", "2", k.proxy)
	uac.Dir = k.dir
	out, err := uac.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		t.Errorf("%s: caller (sipp) from %s dialling %s: %v\n%s", name, from, number, err, tail(string(out), 3000))
	}
	if uas != nil {
		if err := uas.Wait(); err != nil {
			t.Errorf("%s: callee (sipp uas): %v\n%s", name, err, tail(uasOut.String(), 3000))
		}
	}
	return took
}

// hangOn listens on addr (TCP) and accepts connections without ever answering, until the test ends.
func hangOn(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan []net.Conn, 1)
	go func() {
		var conns []net.Conn // held open, unanswered, until the test ends
		for {
			c, err := ln.Accept()
			if err != nil {
				held <- conns
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range <-held {
			c.Close()
		}
	})
}

// TestGuideKamailioHTTP places calls through the Kamailio configuration of
// docs/guides/pbx-integration.md that asks a real node's REST API (with its token) about the
// dialled number (national match) and the caller's address before relaying: a clean call
// completes at a SIPp callee; a number attackers dialled through the honeypot, dialled here in
// another form, and a caller that attacked the honeypot get a 403 with a Reason; with the API
// hanging, each lookup gives up after its second and the call goes through (fail open).
func TestGuideKamailioHTTP(t *testing.T) {
	need(t, "sipp", "kamailio")
	const token = "guide-token"
	// The honeypot: 127.0.0.66 attacks it, dialling 004990012345.
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--api-token", token}})
	attackFrom(t, nil, "127.0.0.66", fmt.Sprintf("127.0.0.1:%d", n.port), "004990012345")

	k := startKamailio(t, "kamailio-http.cfg", map[string]any{"API": "http://" + n.apiAddr, "Token": token})
	k.call("clean call completes", "0046812110000", "127.0.0.1", 200, "")
	k.call("known-bad number in another form refused", "+4990012345", "127.0.0.1", 403, `^ *SIP;cause=403;text="dialtrap: known-bad number"$`)
	k.call("known-bad caller refused", "0046812110000", "127.0.0.66", 403, `^ *SIP;cause=403;text="dialtrap: known-bad caller"$`)

	// Fail open: the API accepts connections and never answers. Each lookup gives up after its
	// second, and even the known-bad caller's call goes through.
	n.stop()
	hangOn(t, n.apiAddr)
	took := k.call("API hanging, call goes through", "0046812110000", "127.0.0.66", 200, "")
	if took > 6*time.Second {
		t.Errorf("the call took %s with the API hanging: the lookups' 1 s timeout did not hold", took)
	}
	for _, want := range []string{"dialtrap: number lookup failed", "dialtrap: caller lookup failed"} {
		if !strings.Contains(k.log.String(), want) {
			t.Errorf("kamailio's log lacks %q", want)
		}
	}
	t.Logf("with the API hanging, the call took %s", took.Round(time.Millisecond))
}

// TestGuideKamailioPolicy places calls through the Kamailio configuration of
// docs/guides/pbx-integration.md that sends each new INVITE to a real node's SIP policy agent
// (--policy-addr) first: a clean call is redirected to the dialled target and completes; a
// number attackers dialled through the honeypot (dialled here in another form: the node
// matches nationally) and a caller that attacked it get the agent's 403 and its Reason back;
// with the node stopped, the proxy waits its second for the agent and places the call anyway
// (fail open).
func TestGuideKamailioPolicy(t *testing.T) {
	need(t, "sipp", "kamailio")
	agentPort := testutil.FreePort(t, "")
	agent := fmt.Sprintf("127.0.0.1:%d", agentPort)
	// The honeypot, with its agent. Loopback is never refused by default (never-block), and
	// the callers here are on loopback.
	n := startNode(t, nodeOpts{args: []string{"-r", "-a", "--number-match", "national", "--never-block-defaults=false",
		"--policy-addr", agent, "--policy-allow", "127.0.0.0/8"}})
	attackFrom(t, nil, "127.0.0.66", fmt.Sprintf("127.0.0.1:%d", n.port), "004990012345")

	k := startKamailio(t, "kamailio-policy.cfg", map[string]any{"Agent": agent})
	k.call("clean call redirected and completed", "0046812110000", "127.0.0.1", 200, "")
	k.call("known-bad number in another form refused", "+4990012345", "127.0.0.1", 403,
		`^ *SIP;cause=403;text="dialtrap: number \+4990012345 matches known-bad 004990012345 \(2 reports\)"$`)
	k.call("known-bad caller refused", "0046812110000", "127.0.0.66", 403,
		`^ *SIP;cause=403;text="dialtrap: caller 127\.0\.0\.66 is known-bad \(2 reports\)"$`)

	// Fail open: no agent. The proxy's 1 s timer runs out, and the call is placed.
	n.stop()
	took := k.call("agent down, call placed anyway", "0046812110000", "127.0.0.66", 200, "")
	if took > 6*time.Second {
		t.Errorf("the call took %s with the agent down: the proxy's 1 s timer did not hold", took)
	}
	if !strings.Contains(k.log.String(), "dialtrap policy agent did not answer (408)") {
		t.Error("kamailio's log lacks the fail-open warning")
	}
	t.Logf("with the agent down, the call took %s", took.Round(time.Millisecond))
}
