// Package apiclient asks a running node's REST API: whether an IP address or a number is
// known-bad, and the node's peer report. It is the one client the dialtrap subcommands use
// (check --api-url, peers). It trusts only answers the node itself gave: a 404 from a wrong
// URL or a proxy must never pass a number as clean.
package apiclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// ErrPeersOff is returned by Peers when the node runs without -p and --opendht.
var ErrPeersOff = errors.New("peer-to-peer is off on this node (start it with -p, or --opendht)")

// Body size limits: a lookup answer is small; a peer report lists every connected peer.
const (
	maxLookupBody = 1 << 20
	maxPeersBody  = 16 << 20
)

// Client asks one node.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:8082
	Token   string       // bearer token (--api-token); empty for none
	HTTP    *http.Client // nil: http.DefaultClient
}

// Lookup is the answer to "is this known-bad?".
type Lookup struct {
	Known    bool
	Count    string   // seen_count
	LastSeen string   // seen_last
	Matched  []string // numbers a national match found
}

// IP asks /ip-addresses/{ip}.
func (c *Client) IP(ctx context.Context, ip string) (Lookup, error) {
	return c.lookup(ctx, "/ip-addresses/"+url.PathEscape(ip))
}

// Number asks /numbers/{n}?match=exact|national.
func (c *Client) Number(ctx context.Context, n, match string) (Lookup, error) {
	return c.lookup(ctx, "/numbers/"+escapeSegment(n)+"?match="+url.QueryEscape(match))
}

// escapeSegment escapes s as one path segment. A captured number can be any user part,
// "." and ".." too, which url.PathEscape leaves as dot segments a server would resolve.
func escapeSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

func (c *Client) lookup(ctx context.Context, path string) (Lookup, error) {
	resp, body, err := c.get(ctx, path, maxLookupBody)
	if err != nil {
		return Lookup{}, err
	}
	var doc struct {
		Message  string `json:"message"`
		Count    string `json:"seen_count"`
		LastSeen string `json:"seen_last"`
		IPFound  string `json:"bad_actor_found"`
		NumFound string `json:"phone_number_found"`
		Matched  []struct {
			Number string `json:"called_number"`
		} `json:"matched_numbers"`
	}
	fromNode := fromNode(resp) && json.Unmarshal(body, &doc) == nil
	switch {
	case resp.StatusCode == http.StatusOK && fromNode && (doc.IPFound != "" || doc.NumFound != ""):
		l := Lookup{Known: true, Count: doc.Count, LastSeen: doc.LastSeen}
		for _, m := range doc.Matched {
			l.Matched = append(l.Matched, m.Number)
		}
		return l, nil
	case resp.StatusCode == http.StatusNotFound && fromNode && doc.Message != "":
		return Lookup{}, nil
	}
	return Lookup{}, c.unexpected(resp, body)
}

// Peers returns the node's /peers report as the JSON the node sent.
func (c *Client) Peers(ctx context.Context) ([]byte, error) {
	resp, body, err := c.get(ctx, "/peers", maxPeersBody)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK && fromNode(resp) {
		return body, nil
	}
	if resp.StatusCode == http.StatusNotFound && fromNode(resp) {
		return nil, fmt.Errorf("%s: %w", c.BaseURL, ErrPeersOff)
	}
	return nil, c.unexpected(resp, body)
}

// maxHealthBody bounds the /health-check answer.
const maxHealthBody = 64 << 10

// Health asks /health-check (which needs no token) and returns the version the node reports.
// Only a dialtrap node answering 200 with status OK is healthy.
func (c *Client) Health(ctx context.Context) (version string, err error) {
	resp, body, err := c.get(ctx, "/health-check", maxHealthBody)
	if err != nil {
		return "", err
	}
	var doc struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}
	if resp.StatusCode != http.StatusOK || !fromNode(resp) || json.Unmarshal(body, &doc) != nil || doc.Status != "OK" {
		return "", c.unexpected(resp, body)
	}
	return doc.Version, nil
}

// CheckURL says whether BaseURL can name a node's API (http or https, with a host): a
// command line can refuse a mistyped --api-url as a usage error before asking anything.
func (c *Client) CheckURL() error {
	u, err := url.Parse(strings.TrimRight(c.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--api-url %q: give the node's API as http://host:port", c.BaseURL)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, limit int64) (*http.Response, []byte, error) {
	if err := c.CheckURL(); err != nil {
		return nil, nil, err
	}
	base := strings.TrimRight(c.BaseURL, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("--api-url %q: %w", c.BaseURL, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("ask %s (is the node running with -a, and --api-url right?): %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, fmt.Errorf("read the answer of %s: %w", req.URL, err)
	}
	return resp, body, nil
}

// fromNode reports whether a dialtrap node (not a proxy or another server) answered.
func fromNode(resp *http.Response) bool { return resp.Header.Get("X-Powered-By") == "dialtrap" }

func (c *Client) unexpected(resp *http.Response, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if c.Token != "" {
			return fmt.Errorf("%s: %s: the node refused the token given (--api-token or DIALTRAP_API_TOKEN): check it against the node's --api-token", resp.Request.URL, resp.Status)
		}
		return fmt.Errorf("%s: %s: give the node's token with --api-token or DIALTRAP_API_TOKEN", resp.Request.URL, resp.Status)
	}
	if fromNode(resp) && json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s: %s: %s", resp.Request.URL, resp.Status, e.Error)
	}
	return fmt.Errorf("unexpected answer from %s (is it a dialtrap node?): %s %.200q", resp.Request.URL, resp.Status, body)
}

// maxJSONBody bounds a statistics answer read whole (lists are asked with a limit).
const maxJSONBody = 8 << 20

// JSON asks path (with its query) and decodes the node's 200 answer into v.
func (c *Client) JSON(ctx context.Context, path string, v any) error {
	resp, body, err := c.get(ctx, path, maxJSONBody)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !fromNode(resp) {
		return c.unexpected(resp, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("the answer of %s%s is not the JSON expected: %w", c.BaseURL, path, err)
	}
	return nil
}
