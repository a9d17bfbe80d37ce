package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// A minimal W3C WebDriver client for Debian's chromedriver, over plain net/http: the few
// commands the dashboard test needs (navigate, find, type, click, run a script, screenshot).
// It needs no module beyond the standard library, and chromedriver comes in the same Debian
// release as chromium, so their versions always match.

// webElementKey is the W3C name of an element reference in JSON.
const webElementKey = "element-6066-11e4-a52e-4f735466cecf"

type browser struct {
	t    *testing.T
	base string // http://127.0.0.1:<port>/session/<id>
	hc   *http.Client
}

var driverPortRE = regexp.MustCompile(`started successfully on port (\d+)`)

// startBrowser runs chromedriver on a port the kernel picks (it prints it) and opens a
// headless Chromium session; both end with the test.
func startBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	need(t, "chromedriver", "chromium")
	chromium, _ := exec.LookPath("chromium")
	cmd := exec.Command("chromedriver", "--port=0", "--allowed-ips=127.0.0.1", "--log-level=WARNING")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	portc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := driverPortRE.FindStringSubmatch(sc.Text()); m != nil {
				portc <- m[1]
			}
		}
	}()
	var port string
	select {
	case port = <-portc:
	case <-time.After(20 * time.Second):
		t.Fatal("chromedriver did not say which port it listens on")
	}
	b := &browser{t: t, base: "http://127.0.0.1:" + port, hc: &http.Client{Timeout: 60 * time.Second}}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromium,
			// As root (the test runs as root) Chromium needs --no-sandbox. Everything that
			// would talk to the internet is off: the test talks to loopback only.
			"args": []string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				fmt.Sprintf("--window-size=%d,%d", width, height), "--user-data-dir=" + t.TempDir(),
				"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
				"--disable-component-update", "--disable-sync", "--disable-extensions",
				"--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication"},
		},
	}}}
	var sess struct {
		SessionID string `json:"sessionId"`
	}
	b.do("POST", "/session", caps, &sess)
	if sess.SessionID == "" {
		t.Fatal("webdriver: no session id")
	}
	b.base += "/session/" + sess.SessionID
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", b.base, nil)
		if resp, err := b.hc.Do(req); err == nil {
			resp.Body.Close()
		}
	})
	return b
}

// do sends one WebDriver command and decodes its "value" into out (when not nil).
func (b *browser) do(method, path string, body, out any) {
	b.t.Helper()
	if err := b.try(method, path, body, out); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) try(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(j)
	}
	url := b.base + path
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("webdriver %s %s: %v: %.300s", method, path, err, raw)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("webdriver %s %s: HTTP %d: %.500s", method, path, resp.StatusCode, env.Value)
	}
	if out != nil {
		return json.Unmarshal(env.Value, out)
	}
	return nil
}

// open loads a page and waits for its DOMContentLoaded (WebDriver's default page load
// strategy waits for "complete").
func (b *browser) open(url string) {
	b.t.Helper()
	b.do("POST", "/url", map[string]string{"url": url}, nil)
}

// js runs a script (a function body; arguments in `arguments`) and decodes its result.
func (b *browser) js(out any, script string, args ...any) {
	b.t.Helper()
	if args == nil {
		args = []any{}
	}
	b.do("POST", "/execute/sync", map[string]any{"script": script, "args": args}, out)
}

// str runs a script that returns a string.
func (b *browser) str(script string, args ...any) string {
	b.t.Helper()
	var s string
	b.js(&s, script, args...)
	return s
}

// find returns the element a CSS selector names.
func (b *browser) find(css string) string {
	b.t.Helper()
	var el map[string]string
	b.do("POST", "/element", map[string]string{"using": "css selector", "value": css}, &el)
	return el[webElementKey]
}

// typeInto clears the element and types text into it, as a user would.
func (b *browser) typeInto(css, text string) {
	b.t.Helper()
	id := b.find(css)
	b.do("POST", "/element/"+id+"/clear", map[string]any{}, nil)
	b.do("POST", "/element/"+id+"/value", map[string]string{"text": text}, nil)
}

func (b *browser) click(css string) {
	b.t.Helper()
	b.do("POST", "/element/"+b.find(css)+"/click", map[string]any{}, nil)
}

// waitFor polls a script returning a bool until it is true or within has passed.
func (b *browser) waitFor(what string, within time.Duration, script string, args ...any) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		var ok bool
		b.js(&ok, script, args...)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("browser: %s: not within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// viewport sets the layout viewport through Chrome's device emulation (a phone's width and
// mobile meta-viewport handling), which a window size alone does not give in headless mode.
func (b *browser) viewport(width, height int, mobile bool) {
	b.t.Helper()
	b.do("POST", "/goog/cdp/execute", map[string]any{"cmd": "Emulation.setDeviceMetricsOverride",
		"params": map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}}, nil)
}

// screenshot saves a PNG of the viewport.
func (b *browser) screenshot(path string) {
	b.t.Helper()
	var s string
	b.do("GET", "/screenshot", nil, &s)
	png, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// artifactsDir is where the dashboard test leaves its screenshots: $DIALTRAP_ARTIFACTS, or
// a new directory under the system's temporary directory, kept after the test (t.TempDir
// would delete them) and logged.
func artifactsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("DIALTRAP_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, err := os.MkdirTemp("", "dialtrap-dashboard-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}
