package sso

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// LoginOptions configure Login, the agent side of the device login.
type LoginOptions struct {
	// BaseURL is the proxy's root (https://llm.example.com).
	BaseURL string
	// Label names the device (client_name); empty sends none.
	Label string
	// Prompt receives the instructions for the person (stderr).
	Prompt io.Writer
	// HTTPClient sends the requests (default: a client with a 30 s
	// timeout).
	HTTPClient *http.Client
	// Sleep waits between polls (default: a timer that ctx cancels).
	Sleep func(ctx context.Context, d time.Duration) error
}

// maxAnswer bounds what Login reads of an answer.
const maxAnswer = 64 << 10

// Login runs the agent side of the device login against a proxy: it asks
// for a device code, tells the person where to approve it, polls at the
// interval the proxy asked for (slower after slow_down) and returns the
// agent token. It gives up when ctx ends, the code expires or the person
// denies it.
func Login(ctx context.Context, o LoginOptions) (string, error) {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	base := strings.TrimRight(o.BaseURL, "/")
	form := url.Values{}
	if o.Label != "" {
		form.Set("client_name", o.Label)
	}
	var codes deviceCodeResponse
	if status, oerr, err := postForm(ctx, o.HTTPClient, base+"/auth/device/code", form, &codes); err != nil {
		return "", fmt.Errorf("request a device code: %w", err)
	} else if status != http.StatusOK {
		return "", fmt.Errorf("request a device code: %d %s", status, oerr)
	}
	if codes.DeviceCode == "" || codes.VerificationURIComplete == "" {
		return "", errors.New("request a device code: the answer lacks device_code or verification_uri_complete")
	}
	fmt.Fprintf(o.Prompt, "To connect this device, open\n\n  %s\n\nsign in and approve code %s. Waiting…\n",
		codes.VerificationURIComplete, codes.UserCode)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(max(codes.ExpiresIn, 1))*time.Second)
	defer cancel()
	wait := time.Duration(max(codes.Interval, 1)) * time.Second
	poll := url.Values{"grant_type": {GrantType}, "device_code": {codes.DeviceCode}}
	for {
		if err := o.Sleep(ctx, wait); err != nil {
			return "", fmt.Errorf("wait for approval: %w", err)
		}
		var tok tokenResponse
		status, oerr, err := postForm(ctx, o.HTTPClient, base+"/auth/device/token", poll, &tok)
		switch {
		case err != nil:
			return "", fmt.Errorf("poll for the token: %w", err)
		case status == http.StatusOK && tok.AccessToken != "":
			return tok.AccessToken, nil
		case oerr.Error == "authorization_pending":
		case oerr.Error == "slow_down":
			wait += 5 * time.Second // RFC 8628 §3.5
		case oerr.Error == "access_denied":
			return "", errors.New("the sign-in was denied")
		case oerr.Error == "expired_token":
			return "", errors.New("the code expired before it was approved; run login again")
		default:
			return "", fmt.Errorf("poll for the token: %d %s", status, oerr)
		}
	}
}

func (e oauthError) String() string {
	if e.Description != "" {
		return e.Error + ": " + e.Description
	}
	return e.Error
}

// postForm posts form and decodes a 200 answer into out, or the OAuth
// error of another.
func postForm(ctx context.Context, c *http.Client, target string, form url.Values, out any) (int, oauthError, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, oauthError{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	res, err := c.Do(req)
	if err != nil {
		return 0, oauthError{}, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return 0, oauthError{}, err
	}
	var oerr oauthError
	if res.StatusCode == http.StatusOK {
		err = json.Unmarshal(body, out)
	} else if json.Unmarshal(body, &oerr) != nil || oerr.Error == "" {
		oerr.Error = http.StatusText(res.StatusCode)
	}
	return res.StatusCode, oerr, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
