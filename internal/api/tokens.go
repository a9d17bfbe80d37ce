package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
)

// DefaultTokenName is the name of a token given without one (--api-token SECRET).
const DefaultTokenName = "default"

// MinSecret is the shortest secret a named token may have: an old secret such as
// "k7Hq2mZ9vXb4Lr8T:1" would otherwise turn into the name k7Hq2mZ9vXb4Lr8T and the secret "1".
const MinSecret = 8

// ScopeLookup limits a token to the read-only lookup routes.
const ScopeLookup = "lookup"

// Token is one API token: its name (for logs and hits), the digest of its secret, and
// whether it may only ask the lookup routes.
type Token struct {
	Name       string
	LookupOnly bool
	sum        [sha256.Size]byte
	// whole is the digest of the whole NAME:SECRET text: a secret with a ':' in it, given
	// before tokens had names, keeps working for the clients that send it whole.
	whole [sha256.Size]byte
}

// ParseToken reads one token: SECRET (named "default"), NAME:SECRET, or NAME:SECRET:lookup
// (read-only lookup routes only). A name is letters, digits, '.', '_' and '-'.
func ParseToken(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errors.New("empty API token")
	}
	name, secret, named := strings.Cut(s, ":")
	if !named {
		return Token{Name: DefaultTokenName, sum: sha256.Sum256([]byte(s))}, nil
	}
	// The messages below never quote the secret side, nor a name that does not pass as one:
	// a secret from before tokens had names may be the text being refused.
	if !validTokenName(name) {
		return Token{}, errors.New("API token: the part before the first ':' is not a name (letters, digits, '.', '_', '-'); the form is NAME:SECRET[:lookup], and a secret may not hold ':'")
	}
	t := Token{Name: name}
	if rest, scope, ok := strings.Cut(secret, ":"); ok {
		if scope != ScopeLookup {
			return Token{}, fmt.Errorf("API token %q: what follows the secret is not the scope %q (a secret may not hold ':')", name, ScopeLookup)
		}
		secret, t.LookupOnly = rest, true
	}
	if len(secret) < MinSecret {
		return Token{}, fmt.Errorf("API token %q: the secret is shorter than %d characters (form NAME:SECRET[:lookup])", name, MinSecret)
	}
	t.sum = sha256.Sum256([]byte(secret))
	if !t.LookupOnly {
		t.whole = sha256.Sum256([]byte(s))
	}
	return t, nil
}

func validTokenName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ParseTokens reads several tokens; names must be distinct.
func ParseTokens(specs []string) ([]Token, error) {
	var out []Token
	seen := map[string]bool{}
	for _, s := range specs {
		t, err := ParseToken(s)
		if err != nil {
			return nil, err
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("API token name %q given twice: give each token its own name (NAME:SECRET)", t.Name)
		}
		for _, o := range out {
			if o.sum == t.sum { // which one a request got would depend on their order
				return nil, fmt.Errorf("API tokens %q and %q have the same secret: give each its own", o.Name, t.Name)
			}
		}
		seen[t.Name] = true
		out = append(out, t)
	}
	return out, nil
}

// ReadTokenFile reads tokens one a line, in the forms of ParseToken; '#' starts a comment
// line, blank lines are skipped. The file must not be readable by group or others.
func ReadTokenFile(path string) ([]Token, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read the API token file (--api-token-file): %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("API token file %s is readable by others (mode %v): run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the API token file (--api-token-file): %w", err)
	}
	var specs []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		specs = append(specs, line)
	}
	ts, err := ParseTokens(specs)
	if err != nil {
		return nil, fmt.Errorf("API token file %s: %w", path, err)
	}
	return ts, nil
}

// Tokens is the set of tokens the API accepts; Set replaces it while the API serves (a
// token file re-read on SIGHUP), so revoking one token leaves the others working.
type Tokens struct {
	p atomic.Pointer[[]Token]
}

// NewTokens returns a set holding ts.
func NewTokens(ts []Token) *Tokens {
	t := &Tokens{}
	t.Set(ts)
	return t
}

// Set replaces the tokens.
func (t *Tokens) Set(ts []Token) {
	ts = append([]Token(nil), ts...)
	t.p.Store(&ts)
}

// Enabled reports whether any token is required: a set emptied by a reload keeps the API
// locked (no token matches) rather than opening it.
func (t *Tokens) Enabled() bool { return t != nil && t.p.Load() != nil }

// Names lists the tokens' names.
func (t *Tokens) Names() []string {
	var out []string
	if p := t.p.Load(); p != nil {
		for _, tk := range *p {
			out = append(out, tk.Name)
		}
	}
	return out
}

// match finds the token whose secret is got. Every token is compared, each in constant time
// on digests, so neither a secret's bytes nor its length leak through timing.
func (t *Tokens) match(got string) (Token, bool) {
	sum := sha256.Sum256([]byte(got))
	var found Token
	ok := 0
	for _, tk := range *t.p.Load() {
		if subtle.ConstantTimeCompare(sum[:], tk.sum[:])|subtle.ConstantTimeCompare(sum[:], tk.whole[:]) == 1 {
			found, ok = tk, 1
		}
	}
	return found, ok == 1
}

type tokenKey struct{}

// TokenName is the name of the token the request in ctx was authorized with; "" when the
// API takes no token.
func TokenName(ctx context.Context) string {
	s, _ := ctx.Value(tokenKey{}).(string)
	return s
}

// lookupRoute reports whether the ServeMux pattern is a read-only lookup route a
// ":lookup" token may ask.
func lookupRoute(pattern string) bool {
	switch pattern {
	case "/ip-addresses/{ip}", "/numbers/{n}", "/api/phone-numbers/{n}", "/api/ip-addresses/{ip}", "/health-check":
		return true
	}
	return false
}

// forbidden answers a lookup-only token asking another route.
func forbidden(w http.ResponseWriter, name string) {
	writeError(w, http.StatusForbidden, fmt.Sprintf("The token %q may only look up addresses and numbers.", name))
}
