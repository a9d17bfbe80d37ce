package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/client"
	"github.com/dialtrap/dialtrap/internal/sink/webhook"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// receiver counts the POSTs a loopback alert receiver takes.
type receiver struct {
	mu     sync.Mutex
	bodies []string
	bad    []string
}

func (rc *receiver) handler(secret string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		if secret != "" {
			want := webhook.Sign([]byte(secret), r.Header.Get(webhook.HeaderTimestamp), body)
			if r.Header.Get(webhook.HeaderSignature) != want {
				rc.bad = append(rc.bad, string(body))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
		}
		rc.bodies = append(rc.bodies, string(body))
	})
}

func (rc *receiver) got() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]string(nil), rc.bodies...)
}

// waitFor polls until the receiver holds n bodies, or fails after d.
func (rc *receiver) waitFor(t *testing.T, what string, n int, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for len(rc.got()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d alerts after %v, want %d (bad signatures: %v)", what, len(rc.got()), d, n, rc.bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return rc.got()
}

// A number SIPp dialled is looked up with named tokens through the API and dialtrap check:
// each lookup is a hit that /hits lists with its token's name, and one alert per window
// reaches a signed webhook (down at first: the alert waits in the spool) and a Slack-format
// receiver.
func TestHitAlerts(t *testing.T) {
	need(t, "sipp")
	const secret = "alert-secret"
	slack := &receiver{}
	slackSrv := &http.Server{Handler: slack.handler("")}
	slackLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go slackSrv.Serve(slackLn)
	t.Cleanup(func() { slackSrv.Close() })
	hookPort := testutil.FreePort(t, "") // nothing listens there yet: the webhook receiver is down

	n := startNode(t, nodeOpts{args: []string{"-r", "-a",
		"--api-token", "pbx1:s3cret-pbx:lookup", "--api-token", "billing:s3cret-billing",
		"--alert-webhook", fmt.Sprintf("http://127.0.0.1:%d/alerts", hookPort), "--alert-webhook-secret", secret,
		"--alert-slack", "http://" + slackLn.Addr().String() + "/hooks/x"}})
	a := api{t, "http://" + n.apiAddr, "s3cret-billing"}

	const number = "0046812118532"
	args := []string{"-sf", abs(t, "testdata/invite.xml"), "-m", "1", "-t", "u1", "-i", "127.0.0.2",
		"-p", fmt.Sprint(testutil.FreePort(t, "")), "-nostdin", "-timeout", "30", "-timeout_error", "-s", number,
		fmt.Sprintf("127.0.0.1:%d", n.port)}
	if out, err := run(t, 60*time.Second, "sipp", args...); err != nil {
		t.Fatalf("sipp: %v\n%s", err, tail(out, 2000))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, body := a.get("/numbers?limit=1"); strings.Contains(body, `"called_number": "`+number+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the probe never reached the store:\n%s", n.log())
		}
		time.Sleep(50 * time.Millisecond)
	}

	if _, _, body := a.get("/hits"); !strings.Contains(body, `"hits_total": 0`) {
		t.Fatalf("hits before any lookup: %s", body)
	}
	// The PBX's lookup-only token: a lookup, twice, and a refused list.
	pbx := api{t, a.base, "s3cret-pbx"}
	for range 2 {
		if status, _, body := pbx.get("/numbers/" + number); status != 200 {
			t.Fatalf("lookup with the pbx1 token: %d %s", status, body)
		}
	}
	if status, _, body := pbx.get("/hits"); status != 403 || !strings.Contains(body, `"error"`) {
		t.Errorf("/hits with a lookup-only token: %d %s, want 403", status, body)
	}
	// dialtrap check with the billing token, under the national match.
	if code, out, errOut := dialtrap(t, "check", "--api-url", a.base, "--api-token", "s3cret-billing",
		"--number-match", "national", "+46812118532"); code != 1 {
		t.Errorf("check: exit %d, %q %q", code, out, errOut)
	}
	// And through the Go SDK, as a rating engine would, within a PBX's budget.
	sdk := client.New(a.base, client.WithToken("s3cret-pbx"))
	if v := sdk.CheckNumber(context.Background(), number, 2*time.Second); !v.Known || v.Err != nil {
		t.Errorf("SDK CheckNumber(%s): %+v", number, v)
	}

	// One alert per window at the Slack receiver, however many hits.
	got := slack.waitFor(t, "slack", 1, 10*time.Second)
	var msg struct{ Text string }
	if err := json.Unmarshal([]byte(got[0]), &msg); err != nil || !strings.Contains(msg.Text, "number "+number+" matched, seen ") ||
		!strings.Contains(msg.Text, "by token pbx1 from 127.0.0.1") {
		t.Errorf("slack alert %q (%v)", got[0], err)
	}

	// The webhook receiver comes up: the spooled alert arrives, signed.
	hook := &receiver{}
	hookLn, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", hookPort))
	if err != nil {
		t.Fatal(err)
	}
	hookSrv := &http.Server{Handler: hook.handler(secret)}
	go hookSrv.Serve(hookLn)
	t.Cleanup(func() { hookSrv.Close() })
	got = hook.waitFor(t, "webhook", 1, 30*time.Second)
	var alert struct {
		Alert, Kind, Value, Token, Source, Reason string
		Entry                                     struct {
			Key       string
			SeenCount string `json:"seen_count"`
		}
	}
	if err := json.Unmarshal([]byte(got[0]), &alert); err != nil || alert.Kind != "number" || alert.Value != number ||
		alert.Token != "pbx1" || alert.Source != "api" || alert.Entry.Key != number || alert.Entry.SeenCount == "" {
		t.Errorf("webhook alert %s (%v)", got[0], err)
	}
	time.Sleep(time.Second) // nothing more may come in the window
	if len(hook.got()) != 1 || len(slack.got()) != 1 {
		t.Errorf("alerts: webhook %d, slack %d; want one each per window", len(hook.got()), len(slack.got()))
	}

	// /hits: four hits, newest first, each with its token's name.
	status, _, body := a.get("/hits")
	var hl struct {
		Total int `json:"hits_total"`
		Hits  []struct{ Token, Value, Matched, Client, Source string }
	}
	if err := json.Unmarshal([]byte(body), &hl); status != 200 || err != nil || hl.Total != 4 || len(hl.Hits) != 4 {
		t.Fatalf("/hits: %d %s (%v)", status, body, err)
	}
	if h := hl.Hits[0]; h.Token != "pbx1" || h.Value != number || h.Source != "api" {
		t.Errorf("newest hit (the SDK's) %+v", h)
	}
	if h := hl.Hits[1]; h.Token != "billing" || h.Value != "+46812118532" || h.Matched != number || h.Client != "127.0.0.1" {
		t.Errorf("second hit (dialtrap check's) %+v", h)
	}
	if h := hl.Hits[3]; h.Token != "pbx1" || h.Value != number || h.Source != "api" {
		t.Errorf("oldest hit %+v", h)
	}
}
