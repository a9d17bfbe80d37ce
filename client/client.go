// Package client is the Go client of a dialtrap node's REST API: is this number or this
// address known-bad, the lists of them with paging, the blocklist change stream, the recorded
// hits, the node's health and its peers.
//
// It is meant for the systems that act on dialtrap's answers: a PBX or a rating/billing engine
// asking before it connects a call, a firewall agent following the change stream, a script
// reading the lists. It depends on the standard library only.
//
// Every call takes a context and honours its deadline. Transient failures (connection errors,
// 502, 503 and 504, and 429) are retried a bounded number of times with a jittered back-off,
// never past the context's deadline; Retry-After is honoured. Errors are typed: a node's
// refusal is an [*APIError], 401 matches [ErrUnauthorized], a 404 of a route the node does not
// have matches [ErrNotFound], and a 429 is a [*RateLimitedError]:
//
//	if errors.Is(err, client.ErrUnauthorized) { ... }
//	var rl *client.RateLimitedError
//	if errors.As(err, &rl) { time.Sleep(rl.RetryAfter) }
//
// Only answers a dialtrap node gave count: a lookup's "not found" is trusted only when it
// carries the node's X-Powered-By header and message, so a 404 from a wrong URL or a proxy
// never passes a number as clean.
//
// For a pre-call check with a latency budget that fails open, see [Client.CheckNumber].
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults of a Client's retry policy.
const (
	DefaultMaxAttempts = 3
	DefaultMinBackoff  = 50 * time.Millisecond
	DefaultMaxBackoff  = 2 * time.Second
	// DefaultMaxRetryAfter is the longest Retry-After a Client waits; a node asking for a
	// longer pause gets its error returned at once.
	DefaultMaxRetryAfter = 10 * time.Second
)

// TimeLayout is how a node writes its times (UTC): seen_first, seen_last, a hit's time.
const TimeLayout = "2006-01-02 15:04:05.000000000"

// Client asks one dialtrap node. The zero value is not usable: set BaseURL, or use [New].
// A Client is safe for concurrent use; its fields must not change while it is in use.
type Client struct {
	// BaseURL is the node's API, e.g. http://127.0.0.1:8082 (a trailing slash is fine).
	BaseURL string
	// Token is the bearer token of the node's --api-token; empty for none.
	Token string
	// HTTPClient does the requests; nil means a client like http.DefaultClient that follows
	// no redirect (a node never redirects, and a redirect could carry the token elsewhere).
	// Its Timeout, if any, also ends change streams: prefer contexts.
	HTTPClient *http.Client
	// MaxAttempts bounds the tries of one call (1: no retry); 0 means DefaultMaxAttempts.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the pause between tries (doubling from MinBackoff,
	// jittered); 0 means the defaults.
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAfter is the longest Retry-After waited; 0 means DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// UserAgent is sent as User-Agent; empty means "dialtrap-go-client".
	UserAgent string
}

// Option sets a field of a Client made by New.
type Option func(*Client)

// WithToken sets the bearer token.
func WithToken(token string) Option { return func(c *Client) { c.Token = token } }

// WithHTTPClient sets the HTTP client (transport, TLS, proxies).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.HTTPClient = hc } }

// WithRetries sets how many times one call is tried in all (1: no retry) and the bounds of
// the pause between tries.
func WithRetries(attempts int, minBackoff, maxBackoff time.Duration) Option {
	return func(c *Client) { c.MaxAttempts, c.MinBackoff, c.MaxBackoff = attempts, minBackoff, maxBackoff }
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.UserAgent = ua } }

// New returns a Client of the node at baseURL (e.g. http://127.0.0.1:8082).
func New(baseURL string, opts ...Option) *Client {
	c := &Client{BaseURL: baseURL}
	for _, o := range opts {
		o(c)
	}
	return c
}

// CheckURL says whether BaseURL can name a node's API: http or https, with a host.
func (c *Client) CheckURL() error {
	u, err := url.Parse(c.base())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: %q: give the node's API as http://host:port", ErrBadBaseURL, c.BaseURL)
	}
	return nil
}

func (c *Client) base() string { return strings.TrimRight(c.BaseURL, "/") }

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return defaultHTTP
}

// Body size limits of answers read whole.
const (
	maxSmallBody = 1 << 20  // a lookup, health, an error
	maxBigBody   = 64 << 20 // a peer report, statistics
)

// response is an answer with its body read whole.
type response struct {
	*http.Response
	body []byte
}

// FromNode reports whether a dialtrap node (not a proxy or another server) gave resp.
func fromNode(resp *http.Response) bool { return resp.Header.Get("X-Powered-By") == "dialtrap" }

// get asks path (with its query) and reads the answer whole (up to limit bytes), retrying
// transient failures. ok says which statuses are answers (anything else is an error, after
// the retries a transient one earns).
func (c *Client) get(ctx context.Context, path string, limit int64, ok func(*http.Response) bool) (*response, error) {
	var r *response
	err := c.retry(ctx, path, func(resp *http.Response) (bool, error) {
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
		if err != nil {
			return true, fmt.Errorf("read the answer of %s: %w", resp.Request.URL, err)
		}
		if ok(resp) {
			r = &response{resp, body}
			return false, nil
		}
		return transient(resp.StatusCode), newAPIError(resp, body)
	})
	return r, err
}

// open asks path and hands the open answer to use when it is 200 from the node; use closes
// nothing (open does). Used for answers decoded as they arrive (lists, the stream).
func (c *Client) open(ctx context.Context, path string, use func(*http.Response) error) error {
	return c.retry(ctx, path, func(resp *http.Response) (bool, error) {
		if resp.StatusCode == http.StatusOK && fromNode(resp) {
			return false, use(resp)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxSmallBody))
		return transient(resp.StatusCode), newAPIError(resp, body)
	})
}

// retry does GET path until handle says the answer is final, at most MaxAttempts times.
// handle reports whether its error is transient (worth another try).
func (c *Client) retry(ctx context.Context, path string, handle func(*http.Response) (retry bool, err error)) error {
	if err := c.CheckURL(); err != nil {
		return err
	}
	attempts := c.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			wait := c.backoff(i)
			var api *APIError
			if errors.As(last, &api) && api.RetryAfter > 0 {
				wait = api.RetryAfter
			}
			if !c.sleep(ctx, wait) {
				return last
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+path, nil)
		if err != nil {
			return fmt.Errorf("dialtrap: request %s%s: %w", c.base(), path, err)
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		ua := c.UserAgent
		if ua == "" {
			ua = "dialtrap-go-client"
		}
		req.Header.Set("User-Agent", ua)
		resp, err := c.httpClient().Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("ask %s: %w", c.base(), err)
			}
			last = &ConnError{URL: req.URL.String(), Err: err}
			continue
		}
		again, err := handle(resp)
		resp.Body.Close() // a stream's too: no draining, which would wait for more

		if err == nil || !again {
			return err
		}
		last = err
	}
	return last
}

// transient reports whether a status is worth another try.
func transient(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// backoff is the pause before try i+1 (i ≥ 1): doubling from MinBackoff up to MaxBackoff,
// with jitter in its upper half.
func (c *Client) backoff(i int) time.Duration {
	lo, hi := c.MinBackoff, c.MaxBackoff
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi <= 0 {
		hi = DefaultMaxBackoff
	}
	d := lo << (i - 1)
	if d > hi || d <= 0 {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d unless that goes past ctx's deadline or MaxRetryAfter; false: don't retry.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	limit := c.MaxRetryAfter
	if limit <= 0 {
		limit = DefaultMaxRetryAfter
	}
	if d > limit {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// GetJSON asks path (with its query, e.g. "/stats?since=24h") and decodes the node's 200
// answer into v. It serves the routes this package has no method for.
func (c *Client) GetJSON(ctx context.Context, path string, v any) error {
	r, err := c.get(ctx, path, maxBigBody, isNodeOK)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		return fmt.Errorf("the answer of %s is not the JSON expected: %w", r.Request.URL, err)
	}
	return nil
}

func isNodeOK(resp *http.Response) bool { return resp.StatusCode == http.StatusOK && fromNode(resp) }

// Health is a node's /health-check answer.
type Health struct {
	Status  string `json:"status"` // "OK"
	Message string `json:"message"`
	Version string `json:"version"`
}

// Health asks /health-check (which needs no token). Only a dialtrap node answering 200 with
// status OK is healthy; anything else is an error.
func (c *Client) Health(ctx context.Context) (Health, error) {
	r, err := c.get(ctx, "/health-check", maxSmallBody, isNodeOK)
	if err != nil {
		return Health{}, err
	}
	var h Health
	if json.Unmarshal(r.body, &h) != nil || h.Status != "OK" {
		return h, newAPIError(r.Response, r.body)
	}
	return h, nil
}

// Peers returns the node's /peers report (its peer-to-peer and OpenDHT state) as the JSON
// the node sent. A node without peer-to-peer answers 404: the error matches ErrNotFound.
func (c *Client) Peers(ctx context.Context) (json.RawMessage, error) {
	r, err := c.get(ctx, "/peers", maxBigBody, isNodeOK)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(r.body), nil
}

// parseCount reads a seen_count, which the node writes as a decimal string.
func parseCount(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// parseTime reads a node's time (TimeLayout, UTC); the zero time when absent or malformed.
func parseTime(s string) time.Time {
	t, err := time.Parse(TimeLayout, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// defaultHTTP is the client used when none is given: the default transport, no redirects.
var defaultHTTP = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
