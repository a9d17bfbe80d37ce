package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

var (
	// ErrUnauthorized matches the error of a 401: no token given, or one the node refused.
	ErrUnauthorized = errors.New("dialtrap: the node wants a valid bearer token")
	// ErrNotFound matches the error of a 404 that is not a lookup's answer: a route the node
	// does not have (a wrong BaseURL, a part switched off on the node, such as /peers without
	// peer-to-peer). A lookup that finds nothing is no error: its Lookup has Known false.
	ErrNotFound = errors.New("dialtrap: no such route on the node")
	// ErrBadBaseURL is returned when BaseURL is not an http(s) URL with a host.
	ErrBadBaseURL = errors.New("dialtrap: bad base URL")
)

// APIError is an answer that is not the one asked for: a node's refusal (400, 401, 404 of a
// route, 5xx), or any answer of a server that is not a dialtrap node (FromNode false).
type APIError struct {
	URL        string // what was asked
	Status     int    // HTTP status code
	StatusText string // e.g. "503 Service Unavailable"
	// Message is the node's "error" (or "message"), Detail its "detail" when it gave one.
	Message, Detail string
	// FromNode says a dialtrap node answered (X-Powered-By: dialtrap).
	FromNode bool
	// Body is the start of the answer (up to 512 bytes), for a server that is not a node.
	Body []byte
	// RetryAfter is the answer's Retry-After (a 429's or a 503's); 0 when it gave none.
	RetryAfter time.Duration
}

func newAPIError(resp *http.Response, body []byte) error {
	e := &APIError{URL: resp.Request.URL.String(), Status: resp.StatusCode, StatusText: resp.Status, FromNode: fromNode(resp)}
	var doc struct {
		Error   string `json:"error"`
		Message string `json:"message"`
		Detail  string `json:"detail"`
	}
	if e.FromNode && json.Unmarshal(body, &doc) == nil {
		e.Message, e.Detail = doc.Error, doc.Detail
		if e.Message == "" {
			e.Message = doc.Message
		}
	}
	if len(body) > 512 {
		body = body[:512]
	}
	e.Body = append([]byte(nil), body...)
	e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
	if resp.StatusCode == http.StatusTooManyRequests {
		return &RateLimitedError{RetryAfter: e.RetryAfter, Err: e}
	}
	return e
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 when absent.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func (e *APIError) Error() string {
	switch {
	case e.FromNode && e.Message != "" && e.Detail != "":
		return fmt.Sprintf("%s: %s: %s (%s)", e.URL, e.StatusText, e.Message, e.Detail)
	case e.FromNode && e.Message != "":
		return fmt.Sprintf("%s: %s: %s", e.URL, e.StatusText, e.Message)
	case e.FromNode:
		return fmt.Sprintf("%s: %s", e.URL, e.StatusText)
	}
	return fmt.Sprintf("unexpected answer from %s (is it a dialtrap node?): %s %.200q", e.URL, e.StatusText, e.Body)
}

// Is makes a 401 match ErrUnauthorized and a node's 404 match ErrNotFound.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrNotFound:
		return e.Status == http.StatusNotFound && e.FromNode
	}
	return false
}

// RateLimitedError is a 429: the node (or a proxy before it) asks to slow down. RetryAfter
// is its Retry-After (0 when it gave none). Err is the answer as an APIError.
type RateLimitedError struct {
	RetryAfter time.Duration
	Err        *APIError
}

func (e *RateLimitedError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("%v (retry after %s)", e.Err, e.RetryAfter)
	}
	return e.Err.Error()
}

func (e *RateLimitedError) Unwrap() error { return e.Err }

// ConnError is a request that got no answer: the node is down, unreachable, or the
// connection broke. It is retried as a transient failure.
type ConnError struct {
	URL string
	Err error
}

func (e *ConnError) Error() string { return fmt.Sprintf("no answer from the node: %v", e.Err) }
func (e *ConnError) Unwrap() error { return e.Err }
