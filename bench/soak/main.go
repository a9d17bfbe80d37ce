// Command soak runs a dialtrap node under mixed hostile traffic for a while and reports what
// it cost: peak memory, peak WAL, lookup latency while it lasted, events lost, and the
// database's integrity. It is `make soak` (see bench/README.md); only loopback is used.
//
// The traffic, all at once: scanners sending SIP at a steady rate (each probe counted, so
// that a loss shows), 64 KiB junk datagrams, clients reading the longest list slowly, a crowd
// of idle keep-alive connections to the API, a PBX asking about numbers, a JSON log rotated by
// SIGHUP every 30 s, and, a third of the way in, the database locked by another process for
// 30 s.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func main() {
	var (
		bin       = flag.String("bin", "./bin/dialtrap", "dialtrap binary")
		duration  = flag.Duration("duration", 10*time.Minute, "how long the attack lasts")
		scanRate  = flag.Int("scan-rate", 1000, "SIP probes a second, from 4 scanners")
		junkRate  = flag.Int("junk-rate", 50, "64 KiB junk datagrams a second")
		idle      = flag.Int("idle-conns", 4000, "idle keep-alive connections held open to the API")
		readers   = flag.Int("slow-readers", 4, "clients reading /numbers at 8 KB/s")
		stall     = flag.Duration("stall", 30*time.Second, "how long the database is locked")
		lookupsPS = flag.Int("lookup-rate", 50, "a PBX's lookups a second")
	)
	flag.Parse()
	if err := run(*bin, *duration, *scanRate, *junkRate, *idle, *readers, *stall, *lookupsPS); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type addrs struct {
	SIPUDP string `json:"sip_udp"`
	API    string `json:"api"`
}

func run(bin string, d time.Duration, scanRate, junkRate, idleConns, readers int, stall time.Duration, lookupRate int) error {
	dir, err := os.MkdirTemp("", "dialtrap-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ready := filepath.Join(dir, "ready.json")
	node := exec.Command(bin, "-r", "-j", "-a", "--data-dir", filepath.Join(dir, "data"),
		"--sip-addr", "127.0.0.1:0", "--sip-tls=false", "--api-addr", "127.0.0.1:0", "--ready-file", ready)
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- node.Wait() }()
	defer node.Process.Kill()
	var a addrs
	for deadline := time.Now().Add(30 * time.Second); ; {
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, &a) == nil {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the node did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	db := filepath.Join(dir, "data", "dialtrap.db")
	fmt.Printf("soak: node pid %d, SIP %s, API %s, %v of: %d probes/s from 4 scanners, %d x 64 KiB junk/s, %d idle API connections, %d slow list readers, %d lookups/s, SIGHUP every 30 s, the database locked for %v at a third\n\n",
		node.Process.Pid, a.SIPUDP, a.API, d, scanRate, junkRate, idleConns, readers, lookupRate, stall)

	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	var sentProbes, sentJunk atomic.Int64
	spawn := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }

	for i := range 4 {
		spawn(func() { scan(ctx, a.SIPUDP, fmt.Sprintf("127.0.0.%d", 10+i), scanRate/4, i, &sentProbes) })
	}
	spawn(func() { junk(ctx, a.SIPUDP, junkRate, &sentJunk) })
	held := holdIdle(a.API, idleConns)
	for i := range readers {
		spawn(func() { slowReader(ctx, a.API, fmt.Sprintf("127.0.0.%d", 40+i)) })
	}
	lat := &latencies{}
	spawn(func() { pbx(ctx, a.API, lookupRate, lat) })
	spawn(func() { rotate(ctx, node, filepath.Join(dir, "data", "dialtrap_json.log")) })
	spawn(func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(d / 3):
		}
		if err := lockDB(ctx, db, stall); err != nil {
			fmt.Fprintln(os.Stderr, "soak: lock the database:", err)
		}
	})
	var maxRSS, maxAnon, maxWAL atomic.Int64
	spawn(func() { monitor(ctx, node.Process.Pid, db, &maxRSS, &maxAnon, &maxWAL) })
	wg.Wait()
	for _, c := range held {
		c.Close()
	}
	// Let the node take in what is in flight, then stop it: it writes every queued event.
	time.Sleep(2 * time.Second)
	kernelDrops := statsDrops(a.API)
	node.Process.Signal(syscall.SIGTERM)
	if err := <-exited; err != nil {
		return fmt.Errorf("the node exited: %w", err)
	}

	st, err := sqlite.Open(context.Background(), db)
	if err != nil {
		return err
	}
	defer st.Close()
	stored, err := st.CountEvents(context.Background())
	if err != nil {
		return err
	}
	integrity := "ok"
	if err := st.IntegrityCheck(context.Background()); err != nil {
		integrity = err.Error()
	}
	sent := sentProbes.Load() + sentJunk.Load()
	p50, p99, max, failed := lat.summary()
	fmt.Printf("sent            %d probes + %d junk datagrams = %d\n", sentProbes.Load(), sentJunk.Load(), sent)
	fmt.Printf("stored          %d events; lost %d (kernel receive drops counted by the node: %d)\n", stored, sent-stored, kernelDrops)
	fmt.Printf("node RSS        peak %d MiB (VmHWM), of it anonymous memory peak %d MiB (queue budget 256 MiB; the rest is the store file mapped for lookups)\n",
		maxRSS.Load()>>20, maxAnon.Load()>>20)
	fmt.Printf("WAL             peak %d MiB (limit 64 MiB)\n", maxWAL.Load()>>20)
	fmt.Printf("lookups         %d, p50 %v, p99 %v, max %v, failed %d\n", lat.count(), p50, p99, max, failed)
	fmt.Printf("idle conns      %d held open at the start\n", len(held))
	fmt.Printf("integrity_check %s\n", integrity)
	if sent != stored || integrity != "ok" {
		return errors.New("events were lost or the database is damaged")
	}
	return nil
}

// scan sends SIP probes at rate from src, each to its own number.
func scan(ctx context.Context, target, src string, rate, id int, sent *atomic.Int64) {
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, udpAddr(target))
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return
	}
	defer c.Close()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	seq := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for range max(rate/100, 1) {
			seq++
			num := fmt.Sprintf("0046%d%08d", id, seq)
			msg := "INVITE sip:" + num + "@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP " + src + ":5070;branch=z9hG4bK-" + strconv.Itoa(seq) +
				"\r\nFrom: <sip:100@" + src + ">;tag=" + strconv.Itoa(seq) + "\r\nTo: <sip:" + num + "@127.0.0.1>\r\nCall-ID: soak-" +
				strconv.Itoa(id) + "-" + strconv.Itoa(seq) + "\r\nCSeq: 1 INVITE\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
			if _, err := c.Write([]byte(msg)); err == nil {
				sent.Add(1)
			}
		}
	}
}

// junk sends 64 KiB datagrams that are not SIP, from two addresses.
func junk(ctx context.Context, target string, rate int, sent *atomic.Int64) {
	payload := []byte(strings.Repeat("\x16\x03junk", 64000/7))
	var conns []*net.UDPConn
	for _, src := range []string{"127.0.0.30", "127.0.0.31"} {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, udpAddr(target))
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			return
		}
		defer c.Close()
		conns = append(conns, c)
	}
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := conns[i%2].Write(payload); err == nil {
			sent.Add(1)
		}
	}
}

// holdIdle opens n keep-alive connections to the API from many addresses (the node takes at
// most 64 from one), asks each for /health-check, and keeps them open.
func holdIdle(api string, n int) []net.Conn {
	var held []net.Conn
	for i := range n {
		src := fmt.Sprintf("127.1.%d.%d", i/60/250, 1+(i/60)%250)
		c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}).Dial("tcp", api)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		c.SetDeadline(time.Time{})
		held = append(held, c)
	}
	return held
}

// slowReader reads /numbers from src at about 8 KB/s, again and again.
func slowReader(ctx context.Context, api, src string) {
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+api+"/numbers", nil)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(time.Second)
			continue
		}
		buf := make([]byte, 1024)
		for ctx.Err() == nil {
			if _, err := resp.Body.Read(buf); err != nil {
				break
			}
			time.Sleep(125 * time.Millisecond)
		}
		resp.Body.Close()
	}
}

type latencies struct {
	mu     sync.Mutex
	d      []time.Duration
	failed int
}

func (l *latencies) add(d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failed++
		return
	}
	l.d = append(l.d, d)
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

func (l *latencies) summary() (p50, p99, max time.Duration, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0, 0, l.failed
	}
	slices.Sort(l.d)
	return l.d[len(l.d)/2], l.d[len(l.d)*99/100], l.d[len(l.d)-1], l.failed
}

// pbx asks about numbers at rate over a keep-alive connection, as a PBX does on each call.
func pbx(ctx context.Context, api string, rate int, lat *latencies) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.99")}}).DialContext}}
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		began := time.Now()
		resp, err := client.Get(fmt.Sprintf("http://%s/numbers/004610%07d", api, i))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 && resp.StatusCode != 404 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		lat.add(time.Since(began), err)
	}
}

// rotate moves the JSON log aside and sends SIGHUP every 30 s, as logrotate would.
func rotate(ctx context.Context, node *exec.Cmd, log string) {
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(30 * time.Second):
		}
		os.Rename(log, fmt.Sprintf("%s.%d", log, i))
		node.Process.Signal(syscall.SIGHUP)
	}
}

// lockDB holds the database's write lock from another process for d.
func lockDB(ctx context.Context, path string, d time.Duration) error {
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		return err
	}
	fmt.Printf("soak: database locked at %s for %v\n", time.Now().Format(time.TimeOnly), d)
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
	_, err = conn.ExecContext(context.Background(), "ROLLBACK")
	fmt.Printf("soak: database unlocked at %s\n", time.Now().Format(time.TimeOnly))
	return err
}

// monitor samples the node's resident memory (all, and anonymous) and the WAL's size every
// 200 ms.
func monitor(ctx context.Context, pid int, db string, maxRSS, maxAnon, maxWAL *atomic.Int64) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		if rss := testutil.ProcStatusKiB(pid, "VmRSS:") << 10; rss > maxRSS.Load() {
			maxRSS.Store(rss)
		}
		if hwm := testutil.ProcStatusKiB(pid, "VmHWM:") << 10; hwm > maxRSS.Load() {
			maxRSS.Store(hwm)
		}
		if anon := testutil.ProcStatusKiB(pid, "RssAnon:") << 10; anon > maxAnon.Load() {
			maxAnon.Store(anon)
		}
		if fi, err := os.Stat(db + "-wal"); err == nil && fi.Size() > maxWAL.Load() {
			maxWAL.Store(fi.Size())
		}
	}
}

// statsDrops reads udp_receive_drops from /stats.
func statsDrops(api string) int64 {
	resp, err := http.Get("http://" + api + "/stats?limit=0")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var doc struct {
		Drops int64 `json:"udp_receive_drops"`
	}
	json.NewDecoder(resp.Body).Decode(&doc)
	return doc.Drops
}

func udpAddr(s string) *net.UDPAddr {
	a, _ := net.ResolveUDPAddr("udp", s)
	return a
}
