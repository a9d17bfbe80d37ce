package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Match is how a number lookup compares the asked number with the stored ones.
type Match string

const (
	// MatchExact finds the number exactly as stored.
	MatchExact Match = "exact"
	// MatchNational finds every stored form of the same national number: +46812345678,
	// 0046812345678, 901146812345678 and the other dial-out prefixes match each other.
	MatchNational Match = "national"
)

// Entry is one stored number or address: a list's item, or a number a national match found.
type Entry struct {
	Value              string    // the number (called_number) or the address (ip_address)
	SeenFirst          time.Time // zero in lists, which carry seen_last only
	SeenLast           time.Time
	SeenCount          int64
	SeenLocally        bool // this node's own honeypot saw it
	SeenByPeers        int  // how many peers reported it
	SeenByTrustedPeers int  // how many of them are trusted (--p2p-trust)
	VerifiedCount      int  // sightings with a proven source (TCP/TLS, or a UDP exchange)
}

// Lookup is the answer to "is this known-bad?".
type Lookup struct {
	// Known is true when the node has the number or address. A node's "not found" gives
	// Known false and no error.
	Known bool
	// Value is what the node found: the address in canonical form, or the number.
	Value string
	Entry
	// Match is "national" when a national match answered; MatchedNumbers are then the stored
	// forms it found, newest first.
	Match          Match
	MatchedNumbers []Entry
}

// wireEntry is an entry as the node writes it.
type wireEntry struct {
	Number             string `json:"called_number"`
	IP                 string `json:"ip_address"`
	SeenFirst          string `json:"seen_first"`
	SeenLast           string `json:"seen_last"`
	SeenCount          string `json:"seen_count"`
	SeenLocally        bool   `json:"seen_locally"`
	SeenByPeers        int    `json:"seen_by_peers"`
	SeenByTrustedPeers int    `json:"seen_by_trusted_peers"`
	VerifiedCount      int    `json:"verified_count"`
}

func (w *wireEntry) entry() Entry {
	v := w.Number
	if v == "" {
		v = w.IP
	}
	return Entry{Value: v, SeenFirst: parseTime(w.SeenFirst), SeenLast: parseTime(w.SeenLast),
		SeenCount: parseCount(w.SeenCount), SeenLocally: w.SeenLocally, SeenByPeers: w.SeenByPeers,
		SeenByTrustedPeers: w.SeenByTrustedPeers, VerifiedCount: w.VerifiedCount}
}

// IP asks whether an IP address (v4 or v6) is known-bad: GET /ip-addresses/{ip}.
func (c *Client) IP(ctx context.Context, ip string) (Lookup, error) {
	return c.lookup(ctx, "/ip-addresses/"+escapeSegment(ip))
}

// NumberOption sets how Number asks.
type NumberOption func(*url.Values)

// WithMatch chooses exact or national matching; without it the node's own default applies
// (exact, or national on a node started with --number-match national).
func WithMatch(m Match) NumberOption {
	return func(q *url.Values) { q.Set("match", string(m)) }
}

// Number asks whether a called number is known-bad: GET /numbers/{n}. n is any called number
// as the node stores it: digits, + and digits, or a SIP user such as "service".
func (c *Client) Number(ctx context.Context, n string, opts ...NumberOption) (Lookup, error) {
	q := url.Values{}
	for _, o := range opts {
		o(&q)
	}
	path := "/numbers/" + escapeSegment(n)
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return c.lookup(ctx, path)
}

// escapeSegment escapes s as one path segment. A captured number can be any user part,
// "." and ".." too, which url.PathEscape leaves as dot segments a server would resolve.
func escapeSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	return url.PathEscape(s)
}

// lookupDoc is a lookup answer: found (200) or the node's "not found" (404 with a message).
type lookupDoc struct {
	wireEntry
	Message  string      `json:"message"`
	IPFound  string      `json:"bad_actor_found"`
	NumFound string      `json:"phone_number_found"`
	Match    string      `json:"match"`
	Matched  []wireEntry `json:"matched_numbers"`
}

// isLookupAnswer accepts a node's 200, and a node's 404 that carries a lookup's message
// (not the {"error": ...} of a route it does not have).
func isLookupAnswer(resp *http.Response) bool {
	return fromNode(resp) && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound)
}

func (c *Client) lookup(ctx context.Context, path string) (Lookup, error) {
	r, err := c.get(ctx, path, maxSmallBody, isLookupAnswer)
	if err != nil {
		return Lookup{}, err
	}
	var doc lookupDoc
	if err := json.Unmarshal(r.body, &doc); err != nil {
		return Lookup{}, fmt.Errorf("the answer of %s is not a lookup: %w", r.Request.URL, err)
	}
	found := doc.IPFound
	if found == "" {
		found = doc.NumFound
	}
	switch {
	case r.StatusCode == http.StatusOK && found != "":
		l := Lookup{Known: true, Value: found, Entry: doc.entry(), Match: Match(doc.Match)}
		l.Entry.Value = found
		for i := range doc.Matched {
			l.MatchedNumbers = append(l.MatchedNumbers, doc.Matched[i].entry())
		}
		return l, nil
	case r.StatusCode == http.StatusNotFound && doc.Message != "":
		return Lookup{}, nil
	}
	return Lookup{}, newAPIError(r.Response, r.body)
}
