// BIRD harness: a real BGP router on loopback for the speaker's tests.

package testutil

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bird is a real BIRD 2 router on loopback, peering with the speaker under test.
type Bird struct {
	t    testing.TB
	sock string
	Addr string // the router's address (127.0.0.2)
	Port int    // its BGP port
	ASN  uint32
}

// BirdOptions configure StartBird.
type BirdOptions struct {
	ASN, PeerASN uint32
	PeerPort     int    // the speaker's listen port, when the router connects (0: the speaker connects)
	Password     string // TCP MD5
	TTLSecurity  bool
	Limit        int      // import limit (max prefixes, action block)
	Export       []string // IPv4 prefixes the router sends the speaker (static blackhole routes)
	// Netns runs the router inside this namespace (BIRD refuses loopback prefixes, so a
	// test whose attackers need real-looking addresses gives them to a namespace's lo).
	Netns *Netns
}

// StartBird runs bird in the foreground with its own config, socket and pid file, peering
// with a speaker at 127.0.0.1.
func StartBird(t testing.TB, o BirdOptions) *Bird {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird not installed (scripts/test-deps.sh installs Debian's bird2): %v", err)
	}
	dir := t.TempDir()
	b := &Bird{t: t, sock: filepath.Join(dir, "bird.ctl"), Addr: "127.0.0.2", Port: FreePort(t, "127.0.0.2"), ASN: o.ASN}
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
	export4, static := "export none;", ""
	if len(o.Export) > 0 {
		export4 = "export where proto = \"sent\";"
		static = "protocol static sent {\n\tipv4;\n"
		for _, p := range o.Export {
			static += "\troute " + p + " blackhole;\n"
		}
		static += "}\n"
	}
	cfg := fmt.Sprintf(`router id 127.0.0.2;
protocol device {}
%sprotocol bgp trap {
	local 127.0.0.2 port %d as %d;
	%s
	connect delay time 1;
	connect retry time 1;
	error wait time 1, 2;
	ipv4 { import all; %s gateway recursive; %s };
	ipv6 { import all; export none; gateway recursive; %s };
}
`, static, b.Port, o.ASN, strings.Join(opts, "\n\t"), export4, limit, limit)
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"bird", "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid")}
	cmd := exec.Command(args[0], args[1:]...)
	if o.Netns != nil {
		cmd = o.Netns.Cmd(args...)
	}
	out := &SyncBuffer{}
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
		if _, err := b.Try("show status"); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("bird did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Try runs one birdc command on the control socket.
func (b *Bird) Try(cmd string) (string, error) {
	out, err := exec.Command("birdc", "-s", b.sock, cmd).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %v: %s", cmd, err, out)
	}
	return string(out), nil
}

// Run is Try, failing the test on error.
func (b *Bird) Run(cmd string) string {
	b.t.Helper()
	out, err := b.Try(cmd)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// Route is one prefix in the router's table.
type Route struct {
	Prefix      string
	NextHop     string
	Communities []string // (65535,666) form
}

var (
	reRoute = regexp.MustCompile(`^([0-9a-f.:]+/\d+)\s+`)
	reComm  = regexp.MustCompile(`\((\d+),(\d+)\)`)
	reHop   = regexp.MustCompile(`BGP\.next_hop:\s+(\S+)`)
)

// Routes reads `show route all` of the protocol: every prefix with its communities.
func (b *Bird) Routes() map[string]Route {
	b.t.Helper()
	out := b.Run("show route all protocol trap")
	rs := map[string]Route{}
	var cur *Route
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := reRoute.FindStringSubmatch(line); m != nil {
			if cur != nil {
				rs[cur.Prefix] = *cur
			}
			cur = &Route{Prefix: m[1]}
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

// Count is how many routes the protocol has in the router's tables (both families).
func (b *Bird) Count() int {
	b.t.Helper()
	n := 0
	for _, table := range []string{"master4", "master6"} {
		out := b.Run("show route count table " + table + " protocol trap")
		if m := reCount.FindStringSubmatch(out); m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// Established reports whether the session with the speaker is up.
func (b *Bird) Established() bool {
	out, err := b.Try("show protocols trap")
	return err == nil && strings.Contains(out, "Established")
}

// WaitFor polls ok until it holds, failing the test after d.
func (b *Bird) WaitFor(what string, d time.Duration, ok func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			b.t.Fatalf("bird: %s not within %s; protocols:\n%s", what, d, b.Run("show protocols all trap"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
