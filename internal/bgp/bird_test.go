package bgp

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// bird is a real BIRD 2 router on loopback, peering with the speaker under test.
type bird struct {
	t    *testing.T
	sock string
	Addr string // the router's address (127.0.0.2)
	Port int    // its BGP port
	ASN  uint32
}

type birdOptions struct {
	ASN, PeerASN uint32
	PeerPort     int    // the speaker's listen port, when the router connects (0: the speaker connects)
	Password     string // TCP MD5
	TTLSecurity  bool
	Limit        int // import limit (max prefixes, action block)
}

// startBird runs bird in the foreground with its own config, socket and pid file, peering
// with a speaker at 127.0.0.1.
func startBird(t *testing.T, o birdOptions) *bird {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird not installed (scripts/test-deps.sh installs Debian's bird2): %v", err)
	}
	dir := t.TempDir()
	b := &bird{t: t, sock: filepath.Join(dir, "bird.ctl"), Addr: "127.0.0.2", Port: freeTCPPort(t, "127.0.0.2"), ASN: o.ASN}
	var opts []string
	if o.PeerPort == 0 {
		opts = append(opts, "passive;")
	} else {
		opts = append(opts, fmt.Sprintf("neighbor 127.0.0.1 port %d as %d;", o.PeerPort, o.PeerASN))
	}
	if o.PeerPort == 0 {
		opts = append(opts, fmt.Sprintf("neighbor 127.0.0.1 as %d;", o.PeerASN))
	}
	if o.Password != "" {
		opts = append(opts, fmt.Sprintf("password %q;", o.Password))
	}
	if o.TTLSecurity {
		opts = append(opts, "ttl security on;")
	} else if o.ASN != o.PeerASN {
		opts = append(opts, "multihop 2;") // eBGP over loopback is not a direct link to BIRD
	}
	limit := ""
	if o.Limit > 0 {
		limit = fmt.Sprintf("import limit %d action block;", o.Limit)
	}
	cfg := fmt.Sprintf(`router id 127.0.0.2;
protocol device {}
protocol bgp trap {
	local 127.0.0.2 port %d as %d;
	%s
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; export none; gateway recursive; %s };
	ipv6 { import all; export none; gateway recursive; %s };
}
`, b.Port, o.ASN, strings.Join(opts, "\n\t"), limit, limit)
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bird", "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("bird output:\n%s\nconfig:\n%s", out.String(), cfg)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.try("show status"); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeTCPPort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// try runs one birdc command on the control socket.
func (b *bird) try(cmd string) (string, error) {
	out, err := exec.Command("birdc", "-s", b.sock, cmd).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %v: %s", cmd, err, out)
	}
	return string(out), nil
}

func (b *bird) run(cmd string) string {
	b.t.Helper()
	out, err := b.try(cmd)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// route is one prefix in the router's table.
type route struct {
	Prefix      string
	NextHop     string
	Communities []string // (65535,666) form
}

var (
	reRoute = regexp.MustCompile(`^([0-9a-f.:]+/\d+)\s+`)
	reComm  = regexp.MustCompile(`\((\d+),(\d+)\)`)
	reHop   = regexp.MustCompile(`BGP\.next_hop:\s+(\S+)`)
)

// routes reads `show route all` of the protocol: every prefix with its communities.
func (b *bird) routes() map[string]route {
	b.t.Helper()
	out := b.run("show route all protocol trap")
	rs := map[string]route{}
	var cur *route
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := reRoute.FindStringSubmatch(line); m != nil {
			if cur != nil {
				rs[cur.Prefix] = *cur
			}
			cur = &route{Prefix: m[1]}
			continue
		}
		if cur == nil {
			continue
		}
		if strings.Contains(line, "BGP.community:") {
			for _, m := range reComm.FindAllStringSubmatch(line, -1) {
				cur.Communities = append(cur.Communities, m[1]+":"+m[2])
			}
		}
		if m := reHop.FindStringSubmatch(line); m != nil {
			cur.NextHop = m[1]
		}
	}
	if cur != nil {
		rs[cur.Prefix] = *cur
	}
	return rs
}

var reCount = regexp.MustCompile(`(\d+) of \d+ routes`)

// count is how many routes the protocol has in the router's tables (both families).
func (b *bird) count() int {
	b.t.Helper()
	n := 0
	for _, table := range []string{"master4", "master6"} {
		out := b.run("show route count table " + table + " protocol trap")
		if m := reCount.FindStringSubmatch(out); m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// established reports whether the session with the speaker is up.
func (b *bird) established() bool {
	out, err := b.try("show protocols trap")
	return err == nil && strings.Contains(out, "Established")
}

func (b *bird) waitFor(what string, d time.Duration, ok func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			b.t.Fatalf("bird: %s not within %s; protocols:\n%s", what, d, b.run("show protocols all trap"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
