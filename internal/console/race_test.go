//go:build race

package console_test

// raceEnabled reports a -race build, whose timings say nothing about the
// release build's.
const raceEnabled = true
