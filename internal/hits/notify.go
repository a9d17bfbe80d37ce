package hits

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/dialtrap/dialtrap/internal/sink/syslog"
	"github.com/dialtrap/dialtrap/internal/sink/webhook"
)

// WebhookNotifier POSTs each alert as JSON through a webhook sink: spooled on disk, signed
// with the secret as events are, retried until the receiver takes it.
type WebhookNotifier struct {
	name  string
	sink  *webhook.Sink
	slack bool // the body is {"text": reason}, for Slack or Mattermost incoming webhooks
}

// NotifyConfig says where alerts go.
type NotifyConfig struct {
	DataDir       string // spools go under DataDir/alert-spool
	UserAgent     string
	WebhookURL    string
	WebhookSecret string
	SlackURL      string
	Syslog        bool
	SyslogAddr    string                              // as --syslog-addr; "" for the local daemon
	Wrap          func(webhook.Config) webhook.Config // adjusts the sinks' config (tests: back-off)
	Log           *slog.Logger                        // where delivery failures are told
}

// OpenNotifiers opens and starts the notifiers cfg asks for. Close them with CloseNotifiers.
func OpenNotifiers(cfg NotifyConfig) ([]Notifier, error) {
	var out []Notifier
	fail := func(err error) ([]Notifier, error) {
		CloseNotifiers(context.Background(), out)
		return nil, err
	}
	hook := func(name, url, secret, dir string, slack bool) error {
		wc := webhook.Config{URL: url, Secret: secret, UserAgent: cfg.UserAgent,
			SpoolDir: filepath.Join(cfg.DataDir, "alert-spool", dir), SpoolMax: 64 << 20, Concurrency: 1}
		if cfg.Log != nil {
			wc.Log = cfg.Log.With("sink", name)
		}
		if cfg.Wrap != nil {
			wc = cfg.Wrap(wc)
		}
		s, err := webhook.New(wc)
		if err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		if err := s.Start(context.Background()); err != nil {
			return fmt.Errorf("--%s: %w", name, err)
		}
		out = append(out, &WebhookNotifier{name: name, sink: s, slack: slack})
		return nil
	}
	if cfg.WebhookURL != "" {
		if err := hook("alert-webhook", cfg.WebhookURL, cfg.WebhookSecret, "webhook", false); err != nil {
			return fail(err)
		}
	}
	if cfg.SlackURL != "" {
		if err := hook("alert-slack", cfg.SlackURL, "", "slack", true); err != nil {
			return fail(err)
		}
	}
	if cfg.Syslog {
		s, err := syslog.Open(cfg.SyslogAddr)
		if err != nil {
			return fail(fmt.Errorf("--alert-syslog: %w", err))
		}
		out = append(out, syslogNotifier{s})
	}
	return out, nil
}

// CloseNotifiers stops the notifiers; undelivered alerts stay spooled for the next start.
func CloseNotifiers(ctx context.Context, ns []Notifier) error {
	var errs []error
	for _, n := range ns {
		switch n := n.(type) {
		case *WebhookNotifier:
			errs = append(errs, n.sink.Close(ctx))
		case syslogNotifier:
			errs = append(errs, n.s.Close())
		}
	}
	return errors.Join(errs...)
}

// Name implements Notifier.
func (w *WebhookNotifier) Name() string { return w.name }

// Notify implements Notifier: the alert is spooled, delivered in the background.
func (w *WebhookNotifier) Notify(a Alert) error {
	var v any = a
	if w.slack {
		v = struct {
			Text string `json:"text"`
		}{"dialtrap: " + slackText(a.Reason)}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return w.sink.Enqueue(b)
}

// slackText makes text safe for a Slack or Mattermost message: the called number in it is
// whatever a scanner dialled, so <!channel>, <https://...|links> and line breaks are
// escaped or replaced, and the text is cut at 1,000 characters.
func slackText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 {
			return '?'
		}
		return r
	}, s)
	s = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
	if len(s) > 1000 {
		s = strings.ToValidUTF8(s[:1000], "") + "..."
	}
	return s
}

// Stats returns the webhook sink's counters.
func (w *WebhookNotifier) Stats() webhook.Stats { return w.sink.Stats() }

type syslogNotifier struct{ s *syslog.Sink }

func (syslogNotifier) Name() string { return "alert-syslog" }

func (n syslogNotifier) Notify(a Alert) error { return n.s.Notice("Hit: " + a.Reason) }
