package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ev(i int) *event.Event {
	return &event.Event{AppName: event.AppName, Timestamp: "2026-11-30 10:00:00.000000000",
		UUID: fmt.Sprintf("00000000-0000-7000-8000-%012d", i), Transport: event.UDP, SourceIP: "130.149.1.2",
		CalledNumber: fmt.Sprintf("00%d", i), SIPMethod: "OPTIONS", SIPUserAgent: "friendly-scanner",
		SIPMessage: "OPTIONS sip:x SIP/2.0\r\n\r\n"}
}

func write(t *testing.T, b *Broadcaster, from, to int) {
	t.Helper()
	var batch []*event.Event
	for i := from; i < to; i++ {
		batch = append(batch, ev(i))
	}
	if err := b.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
}

// numbers returns the called numbers of queued messages, oldest first.
func numbers(t *testing.T, msgs [][]byte) []string {
	t.Helper()
	var out []string
	for _, m := range msgs {
		_, data, ok := strings.Cut(string(m), "\ndata: ")
		if !ok {
			t.Fatalf("no data line in %q", m)
		}
		var e event.Event
		if err := json.Unmarshal([]byte(strings.TrimSpace(data)), &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.CalledNumber)
	}
	return out
}

// A subscriber that does not read keeps only the newest events its queue holds, in events
// and in bytes; the rest are dropped and counted, per subscriber and in all.
func TestQueuesBoundedDropOldest(t *testing.T) {
	b := New(Options{QueueEvents: 3})
	s, err := b.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write(t, b, 0, 5)
	msgs, dropped := s.Take(nil)
	if got := strings.Join(numbers(t, msgs), ","); got != "002,003,004" || dropped != 2 {
		t.Fatalf("queued %s, dropped %d; want 002,003,004 and 2", got, dropped)
	}
	if st := b.Stats(); st.Dropped != 2 || st.Sent != 5 || st.Subscribers != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Bytes: a message is ~700 bytes here; 2,000 bytes hold two.
	size := len(must(b.message(ev(0))))
	b2 := New(Options{QueueEvents: 100, QueueBytes: 2*size + size/2})
	s2, _ := b2.Subscribe()
	defer s2.Close()
	write(t, b2, 0, 10)
	msgs, dropped = s2.Take(nil)
	if got := strings.Join(numbers(t, msgs), ","); got != "008,009" || dropped != 8 {
		t.Fatalf("queued %s, dropped %d; want 008,009 and 8", got, dropped)
	}
	// Take empties the queue; the drop count stays.
	if msgs, dropped = s2.Take(msgs[:0]); len(msgs) != 0 || dropped != 8 {
		t.Fatalf("after Take: %d queued, %d dropped", len(msgs), dropped)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// Write never waits for a subscriber: a browser that stopped reading costs the hub nothing
// but the copy into its bounded queue.
func TestWriteNeverBlocks(t *testing.T) {
	b := New(Options{QueueEvents: 16})
	for range DefaultMaxSubscribers {
		s, err := b.Subscribe()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	start := time.Now()
	for i := range 100 {
		write(t, b, i*100, i*100+100)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("10,000 events to 32 stalled subscribers took %v", d)
	}
	if st := b.Stats(); st.Dropped != uint64(DefaultMaxSubscribers*(10000-16)) {
		t.Fatalf("dropped %d", st.Dropped)
	}
}

// The message is the event's JSON line with the source country after its keys, under
// "event: probe".
func TestMessageFormat(t *testing.T) {
	b := New(Options{Country: func(ip string) string { return map[string]string{"130.149.1.2": "DE"}[ip] }})
	m := string(must(b.message(ev(7))))
	line := must(ev(7).AppendJSON(nil))
	want := "id: 00000000-0000-7000-8000-000000000007\nevent: probe\ndata: " + string(line[:len(line)-1]) + `,"source_country":"DE"}` + "\n\n"
	if m != want {
		t.Fatalf("message\n%q\nwant\n%q", m, want)
	}
	if m := string(must(New(Options{}).message(ev(7)))); !strings.HasSuffix(m, string(line)+"\n\n") {
		t.Fatalf("without Country: %q", m)
	}
}

// Beyond MaxSubscribers a subscription is refused (the route answers 503); a closed one
// frees its slot; after Close none is taken.
func TestSubscriberCapAndClose(t *testing.T) {
	b := New(Options{MaxSubscribers: 2})
	s1, _ := b.Subscribe()
	s2, _ := b.Subscribe()
	if _, err := b.Subscribe(); !errors.Is(err, ErrTooMany) {
		t.Fatalf("third subscriber: %v", err)
	}
	rec := httptest.NewRecorder()
	b.Serve(rec, httptest.NewRequest("GET", "/events/live", nil), nil)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over the cap: %d %v", rec.Code, rec.Header())
	}
	s1.Close()
	s1.Close() // twice is fine
	s3, err := b.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Refused != 2 || st.Subscribers != 2 {
		t.Fatalf("stats %+v", st)
	}
	b.Close()
	for _, s := range []*Subscription{s2, s3} {
		select {
		case <-s.Ended():
		default:
			t.Fatal("subscription not ended by Close")
		}
	}
	if _, err := b.Subscribe(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	write(t, b, 0, 1) // a write after Close is harmless
}

// streamWriter is a ResponseWriter whose body the test reads while the handler writes.
type streamWriter struct {
	mu     sync.Mutex
	header http.Header
	code   int
	body   strings.Builder
}

func (w *streamWriter) Header() http.Header { return w.header }
func (w *streamWriter) WriteHeader(c int)   { w.mu.Lock(); w.code = c; w.mu.Unlock() }
func (w *streamWriter) Flush()              {}
func (w *streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.body.Write(p)
}
func (w *streamWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.body.String() }

// The stream sends a keep-alive comment every KeepAlive, the events as they come, the
// drop count when it grew, and ends when the server's done channel closes.
func TestServeKeepAliveEventsAndShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New(Options{QueueEvents: 2})
		w := &streamWriter{header: http.Header{}}
		done := make(chan struct{})
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			b.Serve(w, httptest.NewRequest("GET", "/events/live", nil), done)
		}()
		synctest.Wait()
		if w.code != 200 || w.header.Get("Content-Type") != "text/event-stream; charset=utf-8" || w.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("headers %d %v", w.code, w.header)
		}
		if !strings.HasPrefix(w.String(), ": dialtrap live feed\nretry: 3000\n\n") {
			t.Fatalf("start %q", w.String())
		}
		time.Sleep(DefaultKeepAlive)
		synctest.Wait()
		if n := strings.Count(w.String(), ": keep-alive\n\n"); n != 1 {
			t.Fatalf("%d keep-alives after 15 s: %q", n, w.String())
		}
		write(t, b, 0, 1)
		synctest.Wait()
		if !strings.Contains(w.String(), "event: probe\ndata: {") || !strings.Contains(w.String(), `"called_number":"000"`) {
			t.Fatalf("no event: %q", w.String())
		}
		// Three events at once into a queue of two, before the handler can take any (its
		// subscription is held locked meanwhile): one dropped.
		b.mu.Lock()
		for s := range b.subs {
			s.mu.Lock()
			for i := 1; i <= 3; i++ {
				s.pushLocked(must(b.message(ev(i))))
			}
			s.mu.Unlock()
			s.wakeUp()
		}
		b.mu.Unlock()
		synctest.Wait()
		out := w.String()
		if !strings.Contains(out, "event: dropped\ndata: {\"dropped\": 1}\n\n") || strings.Contains(out, `"called_number":"001"`) ||
			!strings.Contains(out, `"called_number":"003"`) {
			t.Fatalf("drop not reported: %q", out)
		}
		close(done)
		<-ended
		if b.Stats().Subscribers != 0 {
			t.Fatal("subscription left open")
		}
	})
}

// Over HTTP: a client reads events line by line; the client going away ends the handler and
// frees its slot; the broadcaster's Close ends the others.
func TestServeHTTP(t *testing.T) {
	b := New(Options{Country: func(string) string { return "DE" }})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.Serve(w, r, nil) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	for b.Stats().Subscribers == 0 {
		time.Sleep(time.Millisecond)
	}
	write(t, b, 0, 1)
	var lines []string
	for len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "data: ") {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSuffix(l, "\n"))
	}
	last := lines[len(lines)-1]
	if lines[len(lines)-2] != "event: probe" || !strings.HasSuffix(last, `,"source_country":"DE"}`) {
		t.Fatalf("lines %q", lines)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for b.Stats().Subscribers != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the handler did not end when the client went")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// A second client, ended by Close.
	resp2, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	for b.Stats().Subscribers == 0 {
		time.Sleep(time.Millisecond)
	}
	b.Close()
	if _, err := bufio.NewReader(resp2.Body).ReadString(0); err == nil {
		t.Fatal("stream still open after Close")
	}
}

// Watching says whether a subscriber is there: the hub queues nothing for the feed without.
func TestWatching(t *testing.T) {
	b := New(Options{})
	if b.Watching(nil) {
		t.Fatal("watching with no subscriber")
	}
	s1, err := b.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := b.Subscribe()
	s1.Close()
	if !b.Watching(nil) {
		t.Fatal("not watching with one subscriber left")
	}
	s2.Close()
	s2.Close()
	if b.Watching(nil) {
		t.Fatal("watching after every subscriber went")
	}
	b.Subscribe()
	b.Close()
	if b.Watching(nil) {
		t.Fatal("watching after Close")
	}
}
