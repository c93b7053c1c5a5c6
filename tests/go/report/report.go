// Package report runs the report-card scenarios of a Go client program and
// prints their outcomes: each scenario runs under its own timeout and records
// "pass" or "fail: reason"; progress goes to stderr; the last line on stdout
// is one JSON object: {"client", "version", "results": {scenario: outcome}}.
package report

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
)

// Card collects one program's scenario outcomes.
type Card struct {
	program string
	results map[string]string
}

// New starts a card for the program named (in progress lines).
func New(program string) *Card {
	return &Card{program: program, results: map[string]string{}}
}

// stage names the step the running scenario is at, reported if it times out.
var stage atomic.Value

// Stage records the step the running scenario is at.
func Stage(format string, args ...any) {
	stage.Store(fmt.Sprintf(format, args...))
}

// Run records the outcome of one scenario. The scenario gets a context that
// expires after timeout; a scenario stuck in a call that ignores it is
// abandoned a little later and recorded as timed out, with its last stage.
func (c *Card) Run(name string, timeout time.Duration, fn func(ctx context.Context) error) {
	start := time.Now()
	Stage("start")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("panic: %v", r)
			}
		}()
		done <- fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout + 5*time.Second):
		err = fmt.Errorf("timed out after %s, at: %v", timeout, stage.Load())
	}
	if err == nil {
		c.results[name] = "pass"
	} else {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timeout %s)", err, timeout)
		}
		c.results[name] = "fail: " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	fmt.Fprintf(os.Stderr, "%s: %-60s %s (%.1fs)\n", c.program, name, c.results[name], time.Since(start).Seconds())
}

// Print writes the JSON line of the outcomes.
func (c *Card) Print(client, version string) {
	out, _ := json.Marshal(struct {
		Client  string            `json:"client"`
		Version string            `json:"version"`
		Results map[string]string `json:"results"`
	}{client, version, c.results})
	fmt.Println(string(out))
}

// Checkf is nil when cond holds, else an error with the message.
func Checkf(cond bool, format string, args ...any) error {
	if cond {
		return nil
	}
	return fmt.Errorf(format, args...)
}

// ModuleVersion is the version of a dependency compiled into this program.
func ModuleVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == path {
				return dep.Version
			}
		}
	}
	return "unknown"
}
