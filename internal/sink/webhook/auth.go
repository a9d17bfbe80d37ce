package webhook

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// auth holds the OAuth2 client-credentials token: fetched on first use, reused until
// refreshBefore ahead of its expiry, and fetched anew when the webhook says it is no good.
type auth struct {
	raw           oauth2.TokenSource // fetches a new token on every call
	refreshBefore time.Duration

	mu  sync.Mutex
	src oauth2.TokenSource // caches raw's token
	gen uint64             // bumped each time src is replaced
}

func newAuth(cfg Config, client *http.Client) *auth {
	cc := &clientcredentials.Config{
		ClientID:     cfg.ClientID,
		ClientSecret: cfg.ClientSecret,
		TokenURL:     cfg.TokenURL,
	}
	if cfg.Audience != "" {
		cc.EndpointParams = url.Values{"audience": {cfg.Audience}}
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	a := &auth{raw: rawSource{cc: cc, ctx: ctx}, refreshBefore: cfg.RefreshBefore}
	a.src = oauth2.ReuseTokenSourceWithExpiry(nil, a.raw, a.refreshBefore)
	return a
}

// rawSource asks the token endpoint for a token each time.
type rawSource struct {
	cc  *clientcredentials.Config
	ctx context.Context
}

func (r rawSource) Token() (*oauth2.Token, error) { return r.cc.Token(r.ctx) }

// token returns a valid token and the generation it belongs to.
func (a *auth) token() (*oauth2.Token, uint64, error) {
	a.mu.Lock()
	src, gen := a.src, a.gen
	a.mu.Unlock()
	t, err := src.Token()
	return t, gen, err
}

// invalidate drops the cached token of generation gen, so the next call fetches a new one.
// Several requests refused with the same token cause one fetch, not one each.
func (a *auth) invalidate(gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen == a.gen {
		a.gen++
		a.src = oauth2.ReuseTokenSourceWithExpiry(nil, a.raw, a.refreshBefore)
	}
}
