package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// startDaemon runs a daemon in the foreground for the length of the test.
func startDaemon(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := os.Create(filepath.Join(t.TempDir(), name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("%s output:\n%s", name, tail(string(b), 3000))
		}
	})
	return cmd
}

// The shipped Fail2Ban filter and jail, run by the real fail2ban-server over the lines a real
// rsyslogd wrote from dialtrap's syslog output, ban every address that probed the honeypot
// (IPv4 and IPv6, SIP or garbage) and never an address an attacker wrote into a header.
func TestFail2BanBansProbers(t *testing.T) {
	need(t, "rsyslogd", "fail2ban-server", "fail2ban-client", "sipp", "sipsak")
	// Unix socket paths must stay short.
	dir, err := os.MkdirTemp("", "dtf2b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	userLog := filepath.Join(dir, "user.log")
	sock := filepath.Join(dir, "log.sock")

	// rsyslogd as on Debian (facility user to user.log, traditional format), on its own socket.
	// It also listens on TCP, as a central log host would for a remote node.
	tcpPort := testutil.FreePort(t, "")
	rsconf := filepath.Join(dir, "rsyslog.conf")
	os.WriteFile(rsconf, fmt.Appendf(nil, `global(workDirectory=%q)
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket=%q RateLimit.Interval="0")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="%d")
user.* action(type="omfile" file=%q template="RSYSLOG_TraditionalFileFormat")
`, dir, sock, tcpPort, userLog), 0o644)
	startDaemon(t, "rsyslogd", "-n", "-f", rsconf, "-i", filepath.Join(dir, "rsyslog.pid"))
	testutil.Eventually(t, "rsyslogd socket", 10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })
	os.WriteFile(userLog, nil, 0o644)

	// fail2ban with the system's stock configuration plus the shipped filter and jail; the
	// local override only points the jail at this log, bans with the log-only dummy action,
	// and stops ignoring loopback (where all test traffic comes from).
	conf := filepath.Join(dir, "fail2ban")
	if out, err := exec.Command("cp", "-r", "/etc/fail2ban", conf).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/fail2ban: %v %s", err, out)
	}
	jails, _ := filepath.Glob(filepath.Join(conf, "jail.d", "*"))
	for _, j := range jails {
		os.Remove(j) // the distribution's sshd jail has no log here
	}
	for _, f := range []string{"filter.d/dialtrap.conf", "jail.d/dialtrap.conf"} {
		b, err := os.ReadFile(filepath.Join("../../contrib/fail2ban", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(conf, f), b, 0o644)
	}
	f2bSock := filepath.Join(dir, "f2b.sock")
	banned := filepath.Join(dir, "banned")
	os.WriteFile(filepath.Join(conf, "fail2ban.local"), fmt.Appendf(nil,
		"[Definition]\nlogtarget = %s\nsocket = %s\npidfile = %s\ndbfile = :memory:\n",
		filepath.Join(dir, "fail2ban.log"), f2bSock, filepath.Join(dir, "f2b.pid")), 0o644)
	os.WriteFile(filepath.Join(conf, "jail.d", "dialtrap.local"), fmt.Appendf(nil,
		"[DEFAULT]\nignoreself = false\nignoreip =\n\n[dialtrap]\nlogpath = %s\nbackend = polling\nbanaction = dummy[target=%s]\n",
		userLog, banned), 0o644)
	startDaemon(t, "fail2ban-server", "-f", "-x", "-c", conf)
	status := func() string {
		out, _ := exec.Command("fail2ban-client", "-s", f2bSock, "status", "dialtrap").CombinedOutput()
		return string(out)
	}
	testutil.Eventually(t, "fail2ban jail dialtrap", 20*time.Second, func() bool { return strings.Contains(status(), "Banned IP list") })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fail2ban-client status dialtrap:\n%s", status())
		}
	})

	// A peer's report is stored but never reaches syslog, so it bans no one here: a peer
	// (or whoever holds a node key) must not be able to get an address banned on this host.
	// The sharer captures 127.0.0.7 (passive UDP: shared only because it is told to share
	// unproven sources); the node catches up with it when it meets it.
	sharer := startP2PNode(t, "", append([]string{"--p2p-share-unverified"}, loopP2P...)...)
	sendUDP(t, "127.0.0.7", "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nUser-Agent: peer-seen\r\n\r\n", sharer.port)
	testutil.Eventually(t, "the sharer stores its probe", 10*time.Second, func() bool {
		status, _ := sharer.lookup("/ip-addresses/127.0.0.7")
		return status == http.StatusOK
	})
	withP2P := append([]string{"-r", "-s", "--syslog-addr", "unix://" + sock, "-b", p2pAddrRe.FindString(sharer.log())}, loopP2P...)
	listener := startP2PNode(t, "", withP2P...)
	n := listener.node
	testutil.Eventually(t, "the node stores the peer's report", 20*time.Second, func() bool {
		status, doc := listener.lookup("/ip-addresses/127.0.0.7")
		return status == http.StatusOK && doc["seen_by_peers"] == 1.0
	})
	remote := startNode(t, nodeOpts{args: []string{"-s", "--syslog-addr", fmt.Sprintf("tcp://127.0.0.1:%d", tcpPort)}})

	// sipsak from 127.0.0.1, SIPp from 127.0.0.2 and from ::1.
	if out, err := run(t, 30*time.Second, "sipsak", "-s", fmt.Sprintf("sip:100@127.0.0.1:%d", n.port)); err != nil {
		t.Fatalf("sipsak: %v\n%s", err, out)
	}
	for _, r := range []struct{ local, target string }{
		{"127.0.0.2", fmt.Sprintf("127.0.0.1:%d", n.port)},
		{"::1", fmt.Sprintf("[::1]:%d", n.port)},
	} {
		if out, err := run(t, 60*time.Second, "sipp", "-sf", abs(t, "testdata/options.xml"), "-s", "100",
			"-m", "1", "-t", "u1", "-i", r.local, "-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "30",
			"-timeout_error", r.target); err != nil {
			t.Fatalf("sipp from %s: %v\n%s", r.local, err, tail(out, 2000))
		}
	}
	// A scanner that writes another address into its User-Agent, and plain garbage.
	sendFrom := func(local string, msg string, port int) { sendUDP(t, local, msg, port) }
	sendFrom("127.0.0.4", "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:5060;branch=z9hG4bK-x\r\n"+
		"From: <sip:a@b>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: inj\r\nCSeq: 1 OPTIONS\r\n"+
		"User-Agent: x, Source IP: 10.66.66.66, Method: INVITE, Agent: y\r\nContent-Length: 0\r\n\r\n", n.port)
	sendFrom("127.0.0.5", "\x16\x03\x01\x00\xa5 not SIP at all", n.port)
	// A probe of the node that logs to rsyslog over TCP.
	sendFrom("127.0.0.6", "REGISTER sip:127.0.0.1 SIP/2.0\r\nUser-Agent: sipcli/v1.8\r\n\r\n", remote.port)

	want := []string{"127.0.0.1", "127.0.0.2", "::1", "127.0.0.4", "127.0.0.5", "127.0.0.6"}
	bannedList := func() []string {
		m := regexp.MustCompile(`Banned IP list:\s*(.*)`).FindStringSubmatch(status())
		if m == nil {
			return nil
		}
		return strings.Fields(m[1])
	}
	testutil.Eventually(t, "fail2ban bans every prober of "+strings.Join(want, " ")+" (see the status below)", 30*time.Second, func() bool {
		got := strings.Join(bannedList(), " ")
		for _, ip := range want {
			if !strings.Contains(" "+got+" ", " "+ip+" ") {
				return false
			}
		}
		return true
	})
	if got := bannedList(); len(got) != len(want) {
		t.Errorf("banned %v, want exactly %v (never the address written into a User-Agent, never the peer's 127.0.0.7)", got, want)
	}
	if lines, _ := os.ReadFile(userLog); strings.Contains(string(lines), "Source IP: 127.0.0.7,") {
		t.Errorf("the peer's report reached syslog:\n%s", lines)
	}
	// The dummy action received the bans, and the log lines have the documented form.
	b, _ := os.ReadFile(banned)
	for _, ip := range want {
		if !strings.Contains(string(b), "+"+ip+"\n") {
			t.Errorf("ban action never ran for %s:\n%s", ip, b)
		}
	}
	lines, _ := os.ReadFile(userLog)
	line := regexp.MustCompile(`(?m)^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ dialtrap\[\d+\]: Source IP: 127\.0\.0\.2, Method: OPTIONS, Agent: \S.*$`)
	if !line.Match(lines) {
		t.Errorf("no syslog line of the documented form for the SIPp probe:\n%s", lines)
	}
}

// sendUDP sends one datagram from local (a loopback address) to 127.0.0.1:port.
func sendUDP(t *testing.T, local, msg string, port int) {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(local)}, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}
