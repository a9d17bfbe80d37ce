package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// feedNode starts an API server with feeds over a fresh store holding a verified source, an
// unverified one and a protected one.
func feedNode(t *testing.T, token string) (*Server, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	stamp := event.FormatTime(time.Now().Add(-time.Minute))
	var batch []*event.Event
	for i, s := range []struct {
		ip       string
		verified bool
	}{{"45.134.26.1", true}, {"91.92.240.3", false}, {"10.1.1.1", true}} {
		batch = append(batch, &event.Event{AppName: event.AppName, Timestamp: stamp,
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Transport: event.UDP, SourceIP: s.ip,
			CalledNumber: "0046812118532", SourceVerified: s.verified})
	}
	if err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	ips, _ := feed.NewIPGuard(nil, true)
	nums, _ := feed.NewNumberGuard(nil)
	srv := New(Config{Addr: "127.0.0.1:0", Store: st, Feeds: st, Guards: feed.Guards{IPs: ips, Numbers: nums},
		Token: token, Version: "t", FeedPoll: 10 * time.Millisecond})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv, st
}

func get(t *testing.T, url, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestFeedRoutes(t *testing.T) {
	srv, _ := feedNode(t, "s3cret")
	base := "http://" + srv.Addr().String()
	for _, c := range []struct {
		path, token string
		status      int
		body, ctype string
	}{
		{"/feeds/ip-addresses", "", 401, "bearer token", "application/json"},
		{"/feeds/stream", "wrong", 401, "bearer token", "application/json"},
		{"/feeds/ip-addresses", "s3cret", 200, "45.134.26.1\n", "text/plain; charset=utf-8"},
		{"/feeds/ip-addresses?verified=any", "s3cret", 200, "45.134.26.1\n91.92.240.3\n", "text/plain; charset=utf-8"},
		{"/feeds/ip-addresses?format=csv&source=local", "s3cret", 200, "ip_address,seen_last", "text/csv; charset=utf-8"},
		{"/feeds/numbers?format=json", "s3cret", 200, `"called_number": "0046812118532"`, "application/json"},
		{"/feeds/numbers?format=nft", "s3cret", 400, `"detail": "format nft is for addresses`, "application/json"},
		{"/feeds/ip-addresses?ttl=forever", "s3cret", 400, `"error": "The request data was invalid"`, "application/json"},
		{"/feeds/stream?heartbeat=1ms", "s3cret", 400, "heartbeat", "application/json"},
		{"/feeds/stream?format=sse", "s3cret", 400, "ndjson", "application/json"},
		{"/feeds/ip-addresses/", "s3cret", 404, "could not be found", "application/json"},
	} {
		resp, body := get(t, base+c.path, c.token)
		if resp.StatusCode != c.status || !strings.Contains(body, c.body) || resp.Header.Get("Content-Type") != c.ctype {
			t.Errorf("%s: %d %q %q, want %d containing %q, %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, c.status, c.body, c.ctype)
		}
	}
	// Without a feed source (a node built without one) the routes do not exist.
	plain := newServer(t, nil, "", false)
	if resp, _ := get(t, plain.URL+"/feeds/ip-addresses", ""); resp.StatusCode != 404 {
		t.Errorf("feeds without a source: %d, want 404", resp.StatusCode)
	}
}

// The stream over HTTP: the set, a new source within the poll, a resume from the cursor
// without the set again, and an end when the server closes.
func TestFeedStreamHTTP(t *testing.T) {
	srv, st := feedNode(t, "")
	base := "http://" + srv.Addr().String() + "/feeds/stream?ttl=1h"
	open := func(url string) (*http.Response, *bufio.Reader) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		return resp, bufio.NewReader(resp.Body)
	}
	next := func(r *bufio.Reader) feed.Msg {
		t.Helper()
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		var m feed.Msg
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		return m
	}
	resp, r := open(base)
	if m := next(r); m.Op != feed.OpAdd || m.IP != "45.134.26.1" || m.Timeout < 3500 {
		t.Errorf("first line %+v", m)
	}
	if m := next(r); m.Op != feed.OpSync || !m.Full {
		t.Errorf("second line %+v", m)
	}
	st.Write(context.Background(), []*event.Event{{AppName: event.AppName, Timestamp: event.FormatTime(time.Now()),
		UUID: "00000000-0000-4000-8000-000000000099", Transport: event.TCP, SourceIP: "2a0e:8f02:21c0::7", SourceVerified: true}})
	if m := next(r); m.Op != feed.OpAdd || m.IP != "2a0e:8f02:21c0::7" {
		t.Errorf("live line %+v", m)
	}
	m := next(r)
	if m.Op != feed.OpCursor {
		t.Fatalf("after the change: %+v", m)
	}
	resp.Body.Close()
	resp, r = open(base + "&cursor=" + m.Cursor)
	if m := next(r); m.Op != feed.OpSync || m.Full {
		t.Errorf("resumed stream starts with %+v, want a sync without the set", m)
	}
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Close(ctx); err != nil {
		t.Errorf("close with a stream open: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("close waited %s for the stream", d)
	}
	<-done
	resp.Body.Close()
}

// Change streams are bounded in all (besides two lists a source): one more gets 503.
func TestFeedStreamsBounded(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := New(Config{Addr: "127.0.0.1:0", Store: st, Feeds: st, Version: "t", MaxChangeStreams: 3})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	open := func(src string) *http.Response {
		c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
		resp, err := c.Get("http://" + srv.Addr().String() + "/feeds/stream")
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var open3 []*http.Response
	for _, src := range []string{"127.0.0.2", "127.0.0.2", "127.0.0.3"} {
		resp := open(src)
		if resp.StatusCode != 200 {
			t.Fatalf("stream %d: %s", len(open3), resp.Status)
		}
		open3 = append(open3, resp)
	}
	if resp := open("127.0.0.4"); resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a fourth stream: %s, want 503 with Retry-After", resp.Status)
	}
	open3[0].Body.Close()
	testutil.Eventually(t, "a closed stream frees its place", 5*time.Second, func() bool {
		resp := open("127.0.0.4")
		defer resp.Body.Close()
		return resp.StatusCode == 200
	})
	for _, r := range open3[1:] {
		r.Body.Close()
	}
}
