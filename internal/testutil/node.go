package testutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StartNode starts cmd (a dialtrap node run with -v) and waits up to within for its
// "dialtrap running" line on stderr, which it reads to the end meanwhile. A node that does
// not get there is killed.
func StartNode(cmd *exec.Cmd, within time.Duration) error {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "dialtrap running") {
				once.Do(func() { close(ready) })
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-ready:
		return nil
	case <-time.After(within):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("node not ready in %v", within)
	}
}

// ProcStatusKiB reads a figure of /proc/PID/status in KiB (key such as "VmHWM:"); 0 when
// the process or the key is gone.
func ProcStatusKiB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
