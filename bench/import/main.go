// Command import measures `dialtrap import` and `dialtrap export` on a million records: it
// generates (once, cached) the reference product's SQLite database (table honey, the
// documented columns) and a dialtrap JSON log, imports each into a fresh database with the
// given binary, exports the result, and reports per run the records per second, the wall
// time, the child's peak RSS, the bytes it wrote and their ratio to the final database size.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/sip"
)

func main() {
	var (
		bin   = flag.String("bin", "./bin/dialtrap", "dialtrap binary to measure")
		rows  = flag.Int("rows", 1_000_000, "records in each generated input")
		dir   = flag.String("dir", filepath.Join(os.TempDir(), "dialtrap-import-bench"), "where the generated inputs are kept (reused when present) and the runs write")
		runs  = flag.String("runs", "reference,json", "inputs to import: reference (the reference's database), json (a dialtrap JSON log)")
		noExp = flag.Bool("no-export", false, "skip the export of each imported database")
		extra = flag.String("import-args", "", "more flags for dialtrap import, space-separated")
	)
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fatal(err)
	}
	fmt.Printf("%-36s %10s %9s %12s %9s %12s %10s %7s\n", "run", "records", "wall", "records/s", "peak RSS", "written", "DB size", "ratio")
	for _, r := range strings.Split(*runs, ",") {
		var input string
		switch r {
		case "reference":
			input = filepath.Join(*dir, fmt.Sprintf("reference-%d.db", *rows))
			if err := cached(input, func(p string) error { return genReference(p, *rows) }); err != nil {
				fatal(err)
			}
		case "json":
			input = filepath.Join(*dir, fmt.Sprintf("dialtrap-%d.jsonl", *rows))
			if err := cached(input, func(p string) error { return genJSON(p, *rows) }); err != nil {
				fatal(err)
			}
		default:
			fatal(fmt.Errorf("-runs: unknown input %q", r))
		}
		db := filepath.Join(*dir, "import-"+r+".db")
		for _, suffix := range []string{"", "-wal", "-shm"} {
			os.Remove(db + suffix)
		}
		args := append([]string{"import", "-f", db}, strings.Fields(*extra)...)
		m, err := measure(*bin, append(args, input)...)
		if err != nil {
			fatal(err)
		}
		m.records = int64(*rows)
		m.dbSize = fileSize(db)
		m.print("import " + r)
		if *noExp {
			continue
		}
		out := filepath.Join(*dir, "export-"+r+".jsonl")
		m, err = measure(*bin, "export", "-f", db, "-o", out)
		if err != nil {
			fatal(err)
		}
		m.records = int64(*rows)
		m.dbSize = fileSize(out)
		m.print("export " + r + " (ratio: of output)")
		os.Remove(out)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench/import:", err)
	os.Exit(1)
}

// cached makes path with gen unless it is there; a half-made file never takes its name.
func cached(path string, gen func(string) error) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	start := time.Now()
	if err := gen(tmp); err != nil {
		return fmt.Errorf("generate %s: %w", path, err)
	}
	fmt.Fprintf(os.Stderr, "generated %s (%d MB) in %s\n", path, fileSize(tmp)>>20, time.Since(start).Round(time.Second))
	return os.Rename(tmp, path)
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// result is one child's run.
type result struct {
	records int64
	wall    time.Duration
	maxRSS  int64 // bytes
	written int64 // bytes the child caused to be written to storage
	dbSize  int64
}

func (m result) print(name string) {
	ratio := 0.0
	if m.dbSize > 0 {
		ratio = float64(m.written) / float64(m.dbSize)
	}
	fmt.Printf("%-36s %10d %8.1fs %12.0f %8dM %11dM %9dM %7.2f\n", name, m.records, m.wall.Seconds(),
		float64(m.records)/m.wall.Seconds(), m.maxRSS>>20, m.written>>20, m.dbSize>>20, ratio)
}

// measure runs the binary and reads its resource usage. ru_oublock is the kernel's
// write_bytes of the child (what it caused to be written to storage, the figure of
// /proc/PID/io) in 512-byte units, and ru_maxrss its peak resident set.
func measure(bin string, args ...string) (result, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return result{}, fmt.Errorf("%s %s: %w", bin, strings.Join(args, " "), err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return result{wall: wall, maxRSS: ru.Maxrss << 10, written: ru.Oublock * 512}, nil
}

// gen draws records as honeypots see them: scanners come in bursts (one source, one tool,
// tens to thousands of probes a few hundred milliseconds apart, a few bursts at a time), a
// few sources far more often than most; a burst guesses dial-out prefixes before one target
// number (many distinct numbers, each dialled again by later bursts), walks extensions, or
// repeats one REGISTER; messages of 400-900 bytes with the usual scanners' user agents.
type gen struct {
	r       *rand.Rand
	ips     []string
	targets []string
	t       time.Time
	active  []*burst
}

type burst struct {
	ip, agent, method, target string
	kind, left, step          int
}

const concurrentBursts = 4

func newGen() *gen {
	g := &gen{r: rand.New(rand.NewPCG(1, 2)), t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	for range 20_000 {
		if g.r.IntN(50) == 0 {
			g.ips = append(g.ips, fmt.Sprintf("2001:db8:%x::%x", g.r.IntN(65536), g.r.IntN(65536)))
			continue
		}
		g.ips = append(g.ips, fmt.Sprintf("%d.%d.%d.%d", 1+g.r.IntN(222), g.r.IntN(256), g.r.IntN(256), 1+g.r.IntN(254)))
	}
	countries := []string{"44", "46", "49", "972", "1", "33", "39", "7", "86", "234", "880", "355", "48", "370", "252"}
	for range 20_000 {
		n := countries[g.r.IntN(len(countries))]
		for range 8 + g.r.IntN(3) {
			n += strconv.Itoa(g.r.IntN(10))
		}
		g.targets = append(g.targets, n)
	}
	return g
}

// skewed picks from n items, the first ones far more often.
func (g *gen) skewed(n int) int { return g.r.IntN(g.r.IntN(n) + 1) }

var agents = []string{"friendly-scanner", "sipvicious", "sipcli/v1.8", "PortSIP VoIP SDK 11.2.1", "Z 5.4.12 v2.10.19.9",
	"pplsip", "VaxSIPUserAgent/3.1", "Cisco-SIPGateway/IOS-12.x", "sipsak 0.9.7", "eyeBeam release 1011d stamp 40820",
	"Asterisk PBX 16.6.2", "MicroSIP/3.20.0", "Linphone/3.6.1 (eXosip2/4.1.0)", "SIPPing"}

// dialPrefixes are what a prefix-guessing scan puts before a target's country code.
var dialPrefixes = []string{"", "0", "00", "000", "9", "90", "900", "9000", "011", "9011", "810", "+", "1", "10", "100", "5", "50", "500"}

func (g *gen) newBurst() *burst {
	b := &burst{ip: g.ips[g.skewed(len(g.ips))], agent: agents[g.skewed(len(agents))], kind: g.r.IntN(10)}
	// Mostly short bursts, some very long: about 100 probes on average.
	b.left = 1 + int(g.r.ExpFloat64()*100)
	switch {
	case b.kind < 6: // prefix guessing before one target
		b.method, b.target = "INVITE", g.targets[g.skewed(len(g.targets))]
	case b.kind < 8: // extensions
		b.method, b.step = "REGISTER", 100*(1+g.r.IntN(3))
	default: // one number over and over, or a discovery OPTIONS
		b.method, b.target = []string{"REGISTER", "OPTIONS"}[g.r.IntN(2)], strconv.Itoa(100+g.r.IntN(900))
	}
	return b
}

type record struct {
	ts, uuid, method, transport, ip, number, agent, msg string
	port                                                int
}

func (g *gen) next() record {
	for len(g.active) < concurrentBursts {
		g.active = append(g.active, g.newBurst())
	}
	i := g.r.IntN(len(g.active))
	b := g.active[i]
	if b.left--; b.left <= 0 {
		g.active = append(g.active[:i], g.active[i+1:]...)
	}
	// A few hundred milliseconds apart, now and then a quiet hour.
	g.t = g.t.Add(time.Duration(g.r.IntN(400)) * time.Millisecond)
	if g.r.IntN(20_000) == 0 {
		g.t = g.t.Add(time.Hour)
	}
	rec := record{
		ts:        g.t.Format("2006-01-02 15:04:05.000000000"),
		uuid:      uuid.Must(uuid.NewRandomFromReader(randReader{g.r})).String(),
		transport: []string{"UDP", "UDP", "UDP", "TCP", "TLS"}[len(b.ip)%5],
		ip:        b.ip,
		agent:     b.agent,
		method:    b.method,
		port:      5060 + len(b.agent)%20,
	}
	switch {
	case b.kind < 6:
		rec.number = dialPrefixes[g.r.IntN(len(dialPrefixes))] + b.target
	case b.kind < 8:
		rec.number = strconv.Itoa(b.step + g.r.IntN(b.step*9))
	default:
		rec.number = b.target
	}
	rec.msg = g.message(rec)
	return rec
}

type randReader struct{ r *rand.Rand }

func (r randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.r.Uint32())
	}
	return len(p), nil
}

func (g *gen) message(rec record) string {
	host := "203.0.113.10"
	tag, branch, callID := g.r.Uint64(), g.r.Uint64(), g.r.Uint64()
	var b strings.Builder
	fmt.Fprintf(&b, "%s sip:%s@%s SIP/2.0\r\n", rec.method, rec.number, host)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s:%d;branch=z9hG4bK-%d;rport\r\n", rec.transport, rec.ip, rec.port, branch)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", rec.number, host)
	fmt.Fprintf(&b, "From: \"%d\" <sip:%d@%s>;tag=%x\r\n", 100+g.r.IntN(900), 100+g.r.IntN(900), host, tag)
	fmt.Fprintf(&b, "User-Agent: %s\r\n", rec.agent)
	fmt.Fprintf(&b, "Call-ID: %x@%s\r\n", callID, rec.ip)
	fmt.Fprintf(&b, "Contact: <sip:%d@%s:%d>\r\n", 100+g.r.IntN(900), rec.ip, rec.port)
	fmt.Fprintf(&b, "CSeq: 1 %s\r\n", rec.method)
	switch rec.method {
	case "INVITE":
		sdp := fmt.Sprintf("v=0\r\no=root %d %d IN IP4 %s\r\ns=call\r\nc=IN IP4 %s\r\nt=0 0\r\nm=audio %d RTP/AVP 0 8 18 101\r\n"+
			"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\n"+
			"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n", g.r.IntN(1e9), g.r.IntN(1e9), rec.ip, rec.ip, 10000+g.r.IntN(50000))
		b.WriteString("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n")
		b.WriteString("Supported: replaces, timer\r\nContent-Type: application/sdp\r\n")
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(sdp), sdp)
	case "REGISTER":
		fmt.Fprintf(&b, "Expires: 3600\r\nAuthorization: Digest username=\"%d\", realm=\"%s\", nonce=\"%x\", uri=\"sip:%s\", response=\"%x%x\", algorithm=MD5\r\n",
			100+g.r.IntN(900), host, g.r.Uint64(), host, g.r.Uint64(), g.r.Uint64())
		b.WriteString("Allow: INVITE, ACK, CANCEL, OPTIONS, BYE\r\nContent-Length: 0\r\n\r\n")
	default:
		b.WriteString("Accept: application/sdp\r\nAllow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\r\nContent-Length: 0\r\n\r\n")
	}
	return b.String()
}

// genReference writes the reference product's database: table honey with its documented
// columns, local-time stamps, a port on some source addresses.
func genReference(path string, n int) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(OFF)&_pragma=synchronous(OFF)")
	if err != nil {
		return err
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE honey (
		honey_id INTEGER PRIMARY KEY AUTOINCREMENT, event_timestamp TEXT, event_uuid TEXT,
		collected_method TEXT, source_ip TEXT, called_number TEXT, transport_type TEXT, method TEXT,
		user_agent TEXT, sip_message TEXT, created_by_node_id TEXT)`); err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO honey (event_timestamp, event_uuid, collected_method, source_ip, called_number,
		transport_type, method, user_agent, sip_message, created_by_node_id) VALUES (?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return err
	}
	g := newGen()
	node := "7d0c2f1e-0000-4000-8000-000000000001"
	for range n {
		rec := g.next()
		ip := rec.ip
		if g.r.IntN(4) == 0 && !strings.Contains(ip, ":") {
			ip += ":" + strconv.Itoa(rec.port) // the reference's later form
		}
		method := []string{"responsive", "passive"}[g.r.IntN(2)]
		if _, err := st.ExecContext(ctx, rec.ts, rec.uuid, method, ip, rec.number, rec.transport, rec.method,
			rec.agent, rec.msg, node); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// genJSON writes a dialtrap node's JSON log: every field a node writes, the tool and
// payloads read from the message as capture would.
func genJSON(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	g := newGen()
	node := "7d0c2f1e-0000-4000-8000-000000000002"
	var line []byte
	for range n {
		rec := g.next()
		e := &event.Event{
			AppName: event.AppName, AppVersion: "0.9.0", Timestamp: rec.ts, UUID: rec.uuid, NodeID: node,
			CollectedMethod: event.Passive, Transport: rec.transport, SourceIP: rec.ip, SourcePort: rec.port,
			DestinationIP: "203.0.113.10", DestinationPort: 5060, CalledNumber: rec.number, SIPMethod: rec.method,
			SIPUserAgent: rec.agent, SIPMessage: rec.msg, SIPMessageLength: len(rec.msg),
		}
		m := sip.Parse([]byte(rec.msg))
		intel.Enrich(&m, []byte(rec.msg), e)
		line, err = e.AppendJSON(line[:0])
		if err != nil {
			return err
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}
