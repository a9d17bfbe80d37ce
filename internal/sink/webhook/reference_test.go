package webhook

import (
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/golden"
)

// Every header the sink sends is in the webhook table of docs/reference/events.md, and every
// header there is sent (Authorization only with OAuth2, which this test leaves off).
func TestEventsReferenceWebhookHeaders(t *testing.T) {
	rv := newReceiver(t)
	var (
		mu   sync.Mutex
		sent http.Header
	)
	rv.respond = func(_ int, r *http.Request, _ []byte) (int, http.Header) {
		mu.Lock()
		sent = r.Header.Clone()
		mu.Unlock()
		return http.StatusNoContent, nil
	}
	cfg := testConfig(t, rv.srv.URL)
	cfg.Secret = "s"
	s := openSink(t, cfg)
	events := makeEvents(1, "+4412345678")
	write(t, s, events)
	rv.waitAll(t, events, 10*time.Second)
	closeSink(t, s, time.Second)

	var documented []string
	for _, row := range golden.MarkdownTable(t, "../../../docs/reference/events.md", "## Webhook (`-w`)") {
		documented = append(documented, row[0])
	}
	mu.Lock()
	defer mu.Unlock()
	for name := range sent {
		if name == "Accept-Encoding" || name == "Content-Length" { // added by net/http itself
			continue
		}
		if !slices.Contains(documented, name) {
			t.Errorf("the sink sends %s, which docs/reference/events.md does not list", name)
		}
	}
	for _, name := range documented {
		if sent.Get(name) == "" && name != "Authorization" {
			t.Errorf("docs/reference/events.md lists %s, which the sink did not send", name)
		}
	}
}
