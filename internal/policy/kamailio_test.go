package policy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// kamailioModules finds the directory of Kamailio's modules (Debian puts them under the
// multiarch library directory).
func kamailioModules(t *testing.T) string {
	t.Helper()
	for _, pattern := range []string{"/usr/lib/*/kamailio/modules/tm.so", "/usr/lib/kamailio/modules/tm.so", "/usr/lib64/kamailio/modules/tm.so", "/usr/local/lib*/kamailio/modules/tm.so"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return filepath.Dir(m[0])
		}
	}
	t.Fatal("Kamailio's modules (tm.so) not found: install the kamailio package (scripts/test-deps.sh does)")
	return ""
}

// startKamailio runs Kamailio in the foreground with testdata/kamailio/kamailio.cfg, routing
// new calls through the agent at agent, until the test ends. It returns its address.
func startKamailio(t *testing.T, dir, agent string) string {
	t.Helper()
	if _, err := exec.LookPath("kamailio"); err != nil {
		t.Fatalf("kamailio is not installed (scripts/test-deps.sh installs it): %v", err)
	}
	port := testutil.FreePort(t, "127.0.0.1")
	tmpl, err := template.ParseFiles(filepath.Join("testdata", "kamailio", "kamailio.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg bytes.Buffer
	if err := tmpl.Execute(&cfg, map[string]any{"Port": port, "Agent": agent, "ModulePath": kamailioModules(t)}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "kamailio.cfg")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// -DD: stay in the foreground (children are still forked); -E: log to stderr; its own
	// pid file and runtime directory, small memory pools.
	cmd := exec.Command("kamailio", "-f", cfgPath, "-DD", "-E", "-P", filepath.Join(dir, "kamailio.pid"),
		"-Y", dir, "-m", "32", "-M", "8", "-w", dir)
	var log testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children go with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("kamailio did not exit")
		}
		if t.Failed() {
			t.Logf("kamailio log:\n%s", tail(log.String(), 4000))
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// Ready when it answers: this config refuses an OPTIONS with 405.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("kamailio exited at start:\n%s", tail(log.String(), 4000))
		default:
		}
		lp := c.LocalAddr().(*net.UDPAddr).Port
		ping := strings.ReplaceAll(request("OPTIONS", "sip:ping@"+addr, lp), "call-1@", fmt.Sprintf("ping-%d@", time.Now().UnixNano()))
		_, _ = c.Write([]byte(ping))
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 4096)
		if n, err := c.Read(buf); err == nil && bytes.HasPrefix(buf[:n], []byte("SIP/2.0 405")) {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("kamailio not answering on %s:\n%s", addr, tail(log.String(), 4000))
		}
	}
}

// TestKamailio places real calls through Kamailio, which asks the agent first: a clean
// number is redirected to the callee (a SIPp UAS) and the call completes; a known-bad number,
// and a caller from a known-bad address, get the agent's 403 back through the proxy.
func TestKamailio(t *testing.T) {
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp is not installed (scripts/test-deps.sh installs Debian's sip-tester): %v", err)
	}
	dir := t.TempDir()
	db := newStore(t, knownBad)
	agent := startAgent(t, Config{Lookups: db, National: true})
	proxy := startKamailio(t, dir, agent.UDPAddr().String())

	uasPort := testutil.FreePort(t, "127.0.0.1")
	target := "127.0.0.1:" + strconv.Itoa(uasPort)
	for _, c := range []struct {
		name, number, from string
		status             int
		reason             string
	}{
		{name: "clean call completes", number: "0046812110000", from: "127.0.0.1", status: 200},
		{name: "known-bad number refused", number: "004990012345", from: "127.0.0.1", status: 403,
			reason: `^ *SIP;cause=403;text="dialtrap: number 004990012345 matches known-bad \+4990012345 \(12 reports\)"$`},
		{name: "known-bad caller refused", number: "0046812110000", from: "127.0.0.66", status: 403,
			reason: `^ *SIP;cause=403;text="dialtrap: caller 127\.0\.0\.66 is known-bad \(2 reports\)"$`},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmpl, err := template.ParseFiles(filepath.Join("testdata", "kamailio", "uac.xml"))
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			if err := tmpl.Execute(&b, map[string]any{"Name": c.name, "Target": target, "Status": c.status, "Reason": xmlAttr.Replace(c.reason)}); err != nil {
				t.Fatal(err)
			}
			scenario := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".xml")
			if err := os.WriteFile(scenario, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			var uas <-chan uasResult
			if c.status == 200 {
				uas = startUAS(t, dir, uasPort)
			}
			code, out := runSIPp(t, dir, 20*time.Second, "-sf", scenario, "-s", c.number, "-i", c.from,
				"-p", strconv.Itoa(testutil.FreePort(t, c.from)), proxy)
			if code != 0 {
				t.Fatalf("caller (sipp) exited %d:\n%s", code, tail(out, 3000))
			}
			if uas != nil {
				r := <-uas
				if r.code != 0 {
					t.Fatalf("callee (sipp uas) exited %d:\n%s", r.code, tail(r.out, 3000))
				}
			}
		})
	}
	st := agent.Status()
	if st.Decisions["allow"] != 1 || st.Decisions["deny_number"] != 1 || st.Decisions["deny_source"] != 1 {
		t.Errorf("agent decisions %v", st.Decisions)
	}
}

type uasResult struct {
	code int
	out  string
}

// startUAS runs the callee (testdata/kamailio/uas.xml) for one call on port. The channel yields its result
// once it has exited.
func startUAS(t *testing.T, dir string, port int) <-chan uasResult {
	t.Helper()
	res := make(chan uasResult, 1)
	done := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	uas, err := filepath.Abs(filepath.Join("testdata", "kamailio", "uas.xml"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "sipp", "-sf", uas, "-m", "1", "-nostdin", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-timeout", "15", "-timeout_error")
	cmd.Dir = dir
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			code = -1
		}
		res <- uasResult{code, out.String()}
	}()
	t.Cleanup(func() {
		cancel() // kills it if the call never came
		<-done
	})
	time.Sleep(200 * time.Millisecond) // let it bind before the call comes
	return res
}
