// Package webhook POSTs each event, as the same JSON object the JSON log holds, to an HTTP
// endpoint, optionally with an OAuth2 client-credentials bearer token and an HMAC-SHA256
// signature. Events go first to a spool on disk, so a down or slow endpoint never slows capture
// and a restart loses nothing; workers deliver from the spool with bounded concurrency,
// exponential back-off with jitter, and Retry-After honoured. Delivery is at least once: a
// receiver dedupes by event_uuid (also sent as the Idempotency-Key header).
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	"github.com/dialtrap/dialtrap/internal/backoff"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/ratelog"
	"github.com/dialtrap/dialtrap/internal/spool"
)

// Signature headers sent when a secret is set. The signature is HMAC-SHA256 over
// "<timestamp>.<body>" with the secret as key, hex-encoded after "sha256=", so a receiver can
// check both the sender and that the request is recent.
const (
	HeaderSignature = "X-Dialtrap-Signature"
	HeaderTimestamp = "X-Dialtrap-Timestamp"
)

// Config configures the webhook.
type Config struct {
	URL       string
	UserAgent string // e.g. "dialtrap/1.2.0"

	// OAuth2 client credentials; all empty for no token.
	ClientID, ClientSecret, TokenURL, Audience string
	RefreshBefore                              time.Duration // fetch a new token this long before expiry; default 60s

	Secret string // HMAC-SHA256 key for the signature header; empty for none

	// Compat is the spelling of each body (--event-compat); the zero value is the contract.
	// Bodies are spooled encoded: those a previous run left keep that run's spelling.
	Compat event.Compat

	SpoolDir    string
	SpoolMax    int64         // bytes; default 256 MiB
	Concurrency int           // requests in flight; default 4
	Timeout     time.Duration // per request, token fetch included; default 10s
	MinBackoff  time.Duration // first retry delay; default 1s
	MaxBackoff  time.Duration // longest delay between retries; default 5m

	Log *slog.Logger
}

// Permanent rejections: the receiver will never accept this body, so retrying cannot help.
// The event is written to rejected.jsonl in the spool directory instead, and counted.
var permanent = map[int]bool{
	http.StatusBadRequest: true, http.StatusRequestEntityTooLarge: true,
	http.StatusUnsupportedMediaType: true, http.StatusUnprocessableEntity: true,
}

// Sink is the webhook sink: Write spools, Start delivers.
type Sink struct {
	cfg    Config
	log    *slog.Logger
	spool  *spool.Spool
	client *http.Client
	auth   *auth
	gate   gate

	rejectMu sync.Mutex
	rejected *os.File

	stopTaking context.CancelFunc // ends Next
	stopSends  context.CancelFunc // aborts requests in flight
	wg         sync.WaitGroup
	started    bool

	delivered  atomic.Uint64
	rejects    atomic.Uint64
	failures   atomic.Uint64
	failingLog atomic.Bool // a run of failures is under way

	droppedLogged atomic.Uint64
	// Warnings of each kind at most once per 30 s: an outage or a full spool lasts long.
	warn *ratelog.Logger
}

// msgFailing is the warning of a failed delivery; a new run of failures logs it at once.
const msgFailing = "webhook: delivery failed; events stay spooled and are retried"

// Stats are the webhook's counters.
type Stats struct {
	Delivered uint64 // accepted by the endpoint
	Rejected  uint64 // refused for good (400, 413, 415, 422) and kept in rejected.jsonl
	Failures  uint64 // failed attempts, each retried
	Dropped   uint64 // removed from a full spool before delivery
	Pending   int64  // in the spool
	// SpoolBytes is the spool's size on disk.
	SpoolBytes int64
}

// New validates cfg. It opens nothing: Start opens the spool and starts delivering.
func New(cfg Config) (*Sink, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook URL %q: give an absolute http:// or https:// URL", cfg.URL)
	}
	if cfg.ClientID != "" && cfg.TokenURL == "" {
		return nil, errors.New("OAuth2 client credentials (-i/-c) need --webhook-token-url, the token endpoint of the webhook's service")
	}
	if cfg.TokenURL != "" {
		if t, err := url.Parse(cfg.TokenURL); err != nil || (t.Scheme != "http" && t.Scheme != "https") || t.Host == "" {
			return nil, fmt.Errorf("--webhook-token-url %q: give an absolute http:// or https:// URL", cfg.TokenURL)
		}
		if cfg.ClientID == "" {
			return nil, errors.New("--webhook-token-url needs -i/--oauth2-client-id and -c/--oauth2-client-secret")
		}
	}
	setDefaults(&cfg)
	s := &Sink{cfg: cfg, log: cfg.Log, warn: ratelog.New(cfg.Log, 30*time.Second)}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   cfg.Concurrency,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	s.client = &http.Client{
		Transport: transport,
		Timeout:   cfg.Timeout,
		// A redirected POST may turn into a GET and lose the event; an operator should point
		// -w at the final URL instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	if cfg.ClientID != "" {
		s.auth = newAuth(cfg, s.client)
	}
	s.gate.init(backoff.Policy{Min: cfg.MinBackoff, Max: cfg.MaxBackoff, Jitter: true})
	return s, nil
}

// openSpool opens the spool: Write works from then on.
func (s *Sink) openSpool() error {
	sp, err := spool.Open(s.cfg.SpoolDir, spool.Options{MaxBytes: s.cfg.SpoolMax,
		Name: "webhook spool", Flag: "--webhook-spool-max", Log: s.log})
	if err != nil {
		return err
	}
	s.spool = sp
	return nil
}

func setDefaults(cfg *Config) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = event.AppName
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = time.Minute
	}
	if cfg.SpoolMax <= 0 {
		cfg.SpoolMax = 256 << 20
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 5*time.Minute)
	}
}

// Name implements hub.Sink.
func (s *Sink) Name() string { return "webhook" }

// Write implements hub.Sink: the batch is appended to the spool in one write, or not at all.
// An event that cannot be encoded fails alone (the ones before it are spooled, the hub skips
// it); a spool that cannot be written fails the sink, and the hub retries.
func (s *Sink) Write(_ context.Context, batch []*event.Event) error {
	if s.spool == nil {
		return errors.New("webhook: not started")
	}
	records := make([][]byte, 0, len(batch))
	var bad error
	for i, e := range batch {
		b, err := e.AppendJSONCompat(nil, s.cfg.Compat)
		if err != nil {
			bad = &hub.BadEventError{Index: i, Err: err}
			break
		}
		records = append(records, b)
	}
	if len(records) == 0 {
		return bad
	}
	if err := s.spool.Append(records); err != nil {
		return err
	}
	s.noteDrops()
	return bad
}

// Enqueue spools bodies that are not events (hit alerts): each is POSTed as it is, signed,
// retried and kept across restarts as events are. Start must have been called.
func (s *Sink) Enqueue(bodies ...[]byte) error {
	if s.spool == nil {
		return errors.New("webhook: not started")
	}
	if err := s.spool.Append(bodies); err != nil {
		return err
	}
	s.noteDrops()
	return nil
}

// noteDrops warns when the spool's size cap dropped undelivered events.
func (s *Sink) noteDrops() {
	if st := s.spool.Stats(); st.Dropped > s.droppedLogged.Load() {
		s.droppedLogged.Store(st.Dropped)
		s.warn.Warn("webhook spool full: dropping the oldest undelivered events (raise --webhook-spool-max or fix the endpoint)",
			"dropped_total", st.Dropped, "spool_max", s.cfg.SpoolMax, "pending", st.Pending)
	}
}

// Start opens the spool (events a previous run left there are delivered first) and runs the
// delivery workers until Close.
func (s *Sink) Start(context.Context) error {
	if err := s.openSpool(); err != nil {
		return err
	}
	take, stopTaking := context.WithCancel(context.Background())
	sends, stopSends := context.WithCancel(context.Background())
	s.stopTaking, s.stopSends, s.started = stopTaking, stopSends, true
	if p := s.spool.Stats().Pending; p > 0 {
		s.log.Info("webhook: delivering events spooled before this start", "events", p)
	}
	for range s.cfg.Concurrency {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.work(take, sends)
		}()
	}
	return nil
}

// Close stops taking events from the spool, gives requests in flight until ctx ends to
// finish, and closes the spool. Undelivered events stay spooled for the next start. It is safe
// after a failed Start.
func (s *Sink) Close(ctx context.Context) error {
	if s.spool == nil {
		return nil
	}
	if s.started {
		s.stopTaking()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.stopSends()
			<-done
		}
		s.stopSends()
	}
	s.client.CloseIdleConnections()
	st := s.Stats()
	s.log.Info("webhook totals", "delivered", st.Delivered, "rejected", st.Rejected, "failures", st.Failures,
		"dropped", st.Dropped, "pending", st.Pending)
	err := s.spool.Close()
	s.rejectMu.Lock()
	if s.rejected != nil {
		err = errors.Join(err, s.rejected.Close())
	}
	s.rejectMu.Unlock()
	return err
}

// Stats returns the counters.
func (s *Sink) Stats() Stats {
	var sp spool.Stats
	if s.spool != nil {
		sp = s.spool.Stats()
	}
	return Stats{
		Delivered: s.delivered.Load(), Rejected: s.rejects.Load(), Failures: s.failures.Load(),
		Dropped: sp.Dropped, Pending: sp.Pending, SpoolBytes: sp.Bytes,
	}
}

func (s *Sink) work(take, sends context.Context) {
	for {
		rec, err := s.spool.Next(take)
		if err != nil {
			if take.Err() == nil && !errors.Is(err, spool.ErrClosed) {
				s.log.Error("webhook: cannot read the spool; delivery stopped until restart", "err", err)
			}
			return
		}
		s.deliver(take, sends, rec)
	}
}

// deliver sends rec until the endpoint takes it, rejects it for good, the size cap drops it,
// or shutdown. Shutdown (take ends) starts no new attempt; one in flight runs on until sends
// ends.
func (s *Sink) deliver(take, sends context.Context, rec spool.Record) {
	for {
		if !s.spool.Live(rec) || take.Err() != nil {
			s.spool.Release(rec)
			return
		}
		probe, err := s.gate.wait(take)
		if err != nil {
			s.spool.Release(rec)
			return
		}
		started := time.Now()
		res := s.send(sends, rec.Data)
		if sends.Err() != nil {
			s.spool.Release(rec)
			return
		}
		switch {
		case res.ok:
			s.gate.ok()
			s.delivered.Add(1)
			if s.failingLog.Swap(false) {
				s.log.Info("webhook: endpoint accepts events again", "pending", s.spool.Stats().Pending)
			}
			s.ack(rec)
			return
		case permanent[res.status]:
			s.gate.ok() // the endpoint is up; it just will not take this one
			s.reject(rec, res)
			return
		}
		s.failures.Add(1)
		delay := s.gate.fail(started, probe, res.retryAfter)
		s.warnFailing(res, delay)
	}
}

func (s *Sink) ack(rec spool.Record) {
	if err := s.spool.Ack(rec); err != nil {
		s.warn.Warn("webhook: spool ack failed", "err", err)
	}
}

// result is one attempt's outcome.
type result struct {
	ok         bool
	status     int // 0 when no response came
	retryAfter time.Duration
	err        error
	body       string // start of the response body, for the log
	tokenGen   uint64 // generation of the OAuth2 token sent
}

func (s *Sink) send(ctx context.Context, body []byte) result {
	res := s.post(ctx, body)
	if s.auth != nil && (res.status == http.StatusUnauthorized || res.status == http.StatusForbidden) {
		// The token may have been revoked or the endpoint's clock runs ahead of ours: fetch a
		// new one (unless another worker already did) and try once more at once.
		s.auth.invalidate(res.tokenGen)
		res = s.post(ctx, body)
	}
	return res
}

func (s *Sink) post(ctx context.Context, body []byte) result {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.cfg.UserAgent)
	if id := eventUUID(body); id != "" {
		req.Header.Set("Idempotency-Key", id)
	}
	if s.cfg.Secret != "" {
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		req.Header.Set(HeaderTimestamp, ts)
		req.Header.Set(HeaderSignature, Sign([]byte(s.cfg.Secret), ts, body))
	}
	var gen uint64
	if s.auth != nil {
		var tok *oauth2.Token
		tok, gen, err = s.auth.token()
		if err != nil {
			return result{err: fmt.Errorf("get an OAuth2 token from %s (check -i/-c, --webhook-token-url and --webhook-audience): %w", s.cfg.TokenURL, err)}
		}
		tok.SetAuthHeader(req)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	res := result{status: resp.StatusCode, body: string(snippet), tokenGen: gen}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusNoContent:
		res.ok = true
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return res
}

// LogURL is u as it may appear in logs: without user info or query, which can hold secrets.
func LogURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}

// Sign returns the signature header value for body sent at timestamp ts (Unix seconds).
func Sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// eventUUID finds the event_uuid value in a record this node serialised.
func eventUUID(body []byte) string {
	const key = `"event_uuid":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return ""
	}
	rest := body[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || j > 64 {
		return ""
	}
	return string(rest[:j])
}

// maxRetryAfter bounds how long a Retry-After can pause delivery.
const maxRetryAfter = time.Hour

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return min(time.Duration(n)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

func (s *Sink) reject(rec spool.Record, res result) {
	s.rejects.Add(1)
	path := filepath.Join(s.cfg.SpoolDir, "rejected.jsonl")
	s.rejectMu.Lock()
	var err error
	if s.rejected == nil {
		s.rejected, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
	if err == nil {
		_, err = s.rejected.Write(append(append([]byte(nil), rec.Data...), '\n'))
	}
	s.rejectMu.Unlock()
	if err != nil {
		// Keep it spooled rather than lose it; it will be offered again after a restart.
		s.spool.Release(rec)
		s.warn.Warn("webhook: could not keep a rejected event in rejected.jsonl", "path", path, "err", err)
		return
	}
	s.ack(rec)
	s.warn.Warn("webhook: endpoint refused an event for good; kept in rejected.jsonl", "path", path, "status", res.status,
		"response", res.body, "rejected_total", s.rejects.Load())
}

// warnFailing logs a failed attempt: the first of a run of failures at once, then at most
// every 30 s, so a long outage does not flood the log.
func (s *Sink) warnFailing(res result, delay time.Duration) {
	attrs := []any{"url", LogURL(s.cfg.URL), "retry_in", delay.Round(time.Millisecond),
		"pending", s.spool.Stats().Pending}
	switch {
	case res.err != nil:
		attrs = append(attrs, "err", res.err)
	default:
		attrs = append(attrs, "status", res.status, "response", res.body)
	}
	if res.status >= 300 && res.status < 400 {
		attrs = append(attrs, "hint", "the URL redirects: set -w to the final URL")
	}
	if res.status == http.StatusUnauthorized || res.status == http.StatusForbidden {
		attrs = append(attrs, "hint", "the endpoint refuses our credentials: check -i/-c, --webhook-token-url and --webhook-audience")
	}
	if !s.failingLog.Swap(true) {
		s.warn.Reset(msgFailing)
	}
	s.warn.Warn(msgFailing, attrs...)
}

// gate paces requests while the endpoint fails: after a failure every worker waits out a
// back-off (exponential, with jitter, at least Retry-After), then one request probes the
// endpoint while the others wait for its outcome; a success opens the gate for all.
type gate struct {
	retry backoff.Policy

	mu       sync.Mutex
	failures int
	until    time.Time
	probing  bool
	lastFail time.Time
	changed  chan struct{}
}

func (g *gate) init(retry backoff.Policy) {
	g.retry = retry
	g.changed = make(chan struct{})
}

// wait returns when a request may go; probe is true when it is the one testing a failing
// endpoint.
func (g *gate) wait(ctx context.Context) (probe bool, err error) {
	for {
		g.mu.Lock()
		if g.failures == 0 {
			g.mu.Unlock()
			return false, nil
		}
		d := time.Until(g.until)
		if d <= 0 && !g.probing {
			g.probing = true
			g.mu.Unlock()
			return true, nil
		}
		ch := g.changed
		g.mu.Unlock()
		var timer *time.Timer
		var fire <-chan time.Time
		if d > 0 {
			timer = time.NewTimer(d)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-ch:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			return false, err
		}
	}
}

func (g *gate) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *gate) ok() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.failures != 0 || g.probing {
		g.failures, g.probing = 0, false
		g.signal()
	}
}

// fail records a failed attempt that started at started and returns the pause it set.
// Requests that were already in flight when an earlier failure was counted do not grow the
// back-off again: one outage seen by four workers is one step, not four.
func (g *gate) fail(started time.Time, probe bool, retryAfter time.Duration) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if probe || g.failures == 0 || started.After(g.lastFail) {
		g.failures++
	}
	g.lastFail = now
	if probe {
		g.probing = false
	}
	d := max(g.retry.Delay(g.failures), retryAfter) // jittered: nodes do not retry in step
	if until := now.Add(d); until.After(g.until) {
		g.until = until
	}
	g.signal()
	return time.Until(g.until)
}
