package jsonscan

import "fmt"

// Member returns the bounds of the value of the top-level member name of
// the JSON object body and whether it is there, keys compared as
// ReadRequest compares them: a name there twice gives an error wrapping
// ErrDuplicateKey, one there only in another letter case ErrKeyCase, and a
// body that is not an object ErrInvalid. name must be at most 21 bytes.
func Member(body []byte, name string) (start, end int, found bool, err error) {
	start, end, found, err = uniqueMember(body, newKeySet("", name), 0)
	if err == errNotObject {
		return 0, 0, false, fmt.Errorf("%w: not a JSON object", ErrInvalid)
	}
	return start, end, found, err
}

// Elements returns the bounds of the elements of the JSON array b, relative
// to b, and whether b is an array it could walk (elements are not
// validated).
func Elements(b []byte) (bounds [][2]int, ok bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil, true
	}
	for i < len(b) {
		e := valueEnd(b, i)
		if e < 0 {
			return nil, false
		}
		bounds = append(bounds, [2]int{i, e})
		i = skipWS(b, e)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == ']' {
			return bounds, true
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipWS(b, i+1)
	}
	return nil, false
}

// Splice returns a copy of b with b[start:end] replaced by the
// concatenation of s.
func Splice(b []byte, start, end int, s ...string) []byte { return splice(b, start, end, s...) }

// DeltaText returns the text of a streamed chat answer's delta in one SSE
// event, still JSON-escaped (the bytes between the quotes): OpenAI's
// delta.content or Anthropic's delta.text; nil when the event has none.
// Concatenated results form the contents of one valid JSON string. It
// allocates nothing.
func DeltaText(ev []byte) []byte {
	v := FirstKey(ev, `"delta"`)
	if v < 0 || ev[v] != '{' {
		return nil
	}
	e := valueEnd(ev, v)
	if e < 0 {
		return nil
	}
	d := ev[v:e]
	c := FirstKey(d, `"content"`)
	if c < 0 {
		c = FirstKey(d, `"text"`)
	}
	if c < 0 || d[c] != '"' {
		return nil
	}
	se := stringEnd(d, c)
	if se < 0 {
		return nil
	}
	return d[c+1 : se-1]
}
