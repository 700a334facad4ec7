// Letting the user stop a long computation (Ctrl-C) from inside the core.
//
// The core knows nothing of Python: the bindings install a check (which takes the GIL and
// asks Python whether a signal is pending) and long loops call interrupt_requested() between
// steps. The check runs at most every kInterruptPeriodMs milliseconds per thread, so a call
// costs one clock read; a computation that sees `true` stops and returns Status::Interrupted.
#pragma once

namespace mixedfit {

constexpr int kInterruptPeriodMs = 50;

// The hook returns true when the computation should stop. nullptr (the default) never stops.
using InterruptCheck = bool (*)();
void set_interrupt_check(InterruptCheck check);

// True when the installed check asks to stop; rate-limited per thread (see above). Once it
// has returned true on a thread, it keeps returning true there until clear_interrupt().
bool interrupt_requested();

// Forget a stop request seen on this thread (the bindings call it before each computation).
void clear_interrupt();

}  // namespace mixedfit
