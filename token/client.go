package token

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// DefaultClientTimeout is Client's per-provider timeout when none is set.
const DefaultClientTimeout = 5 * time.Second

// maxAnswerBytes bounds what Client reads from a provider.
const maxAnswerBytes = 64 << 10

// Client fetches tokens the way the browser helper does: provider URLs in
// order, each with its own timeout, first answer wins. It is safe for
// concurrent use once configured.
type Client struct {
	// Providers are token URLs (…/v1/token) in order of preference.
	Providers []string
	// Timeout bounds each provider attempt; 0 = DefaultClientTimeout.
	Timeout time.Duration
	// Username and Password, when Username is set, are sent as HTTP Basic.
	Username, Password string
	// Header is added to every request (e.g. a proxy's identity header).
	Header http.Header
	// HTTPClient defaults to http.DefaultClient.
	HTTPClient *http.Client
}

// ProviderError is a refusal from one provider.
type ProviderError struct {
	URL     string
	Status  int
	Message string
}

func (e *ProviderError) Error() string {
	return fmt.Sprintf("token provider %s: %d %s", e.URL, e.Status, e.Message)
}

// Final reports whether another replica with the same config would refuse
// too (wrong password, forbidden user, bad request), so failing over is
// pointless. Timeouts, 429 and 5xx are not final.
func (e *ProviderError) Final() bool {
	return e.Status >= 400 && e.Status < 500 &&
		e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

// ErrNoProvider is wrapped when every provider failed.
var ErrNoProvider = errors.New("no token provider answered")

// FetchToken returns the first answer from c.Providers. A final refusal
// stops the search and is returned as *ProviderError; otherwise, when all
// fail, the error wraps ErrNoProvider and each provider's error.
func (c *Client) FetchToken(ctx context.Context) (*Answer, error) {
	if len(c.Providers) == 0 {
		return nil, fmt.Errorf("fetch token: %w: none configured", ErrNoProvider)
	}
	errs := []error{ErrNoProvider}
	for _, url := range c.Providers {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("fetch token: %w", err)
		}
		ans, err := c.fetchOne(ctx, url)
		if err == nil {
			return ans, nil
		}
		var pe *ProviderError
		if errors.As(err, &pe) && pe.Final() {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("fetch token: %w", errors.Join(errs...))
}

func (c *Client) fetchOne(ctx context.Context, url string) (*Answer, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultClientTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte("{}")))
	if err != nil {
		return nil, fmt.Errorf("token provider %s: %w", url, err)
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Username != "" {
		req.SetBasicAuth(c.Username, c.Password)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("token provider %s: %w", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswerBytes))
	if err != nil {
		return nil, fmt.Errorf("token provider %s: read answer: %w", url, err)
	}
	if res.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := http.StatusText(res.StatusCode)
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, &ProviderError{URL: url, Status: res.StatusCode, Message: strings.TrimSpace(msg)}
	}
	var ans Answer
	if err := json.Unmarshal(body, &ans); err != nil || ans.Token == "" || ans.Edges == nil {
		return nil, fmt.Errorf("token provider %s: answer is not a token (%v)", url, err)
	}
	ans.Provider = url
	return &ans, nil
}
