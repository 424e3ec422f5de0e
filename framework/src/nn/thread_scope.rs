//! A thread-local value replaced for the length of a call: what a data-parallel training shard
//! installs on the thread it runs on (its dropout stream, its collection of deferred weight
//! products) without passing it through every layer.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Sets `key` to `value` while `f` runs and returns `f`'s result with the value `key` holds at
/// the end; the previous value is restored afterwards, also on unwinding, so scopes nest (a
/// shard that rayon starts on a thread while another shard waits there).
pub(crate) fn with_replaced<T: 'static, R>(
    key: &'static LocalKey<RefCell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> (R, T) {
    struct Restore<T: 'static> {
        key: &'static LocalKey<RefCell<T>>,
        outer: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            if let Some(outer) = self.outer.take() {
                self.key.with(|c| *c.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore {
        key,
        outer: Some(key.with(|c| c.replace(value))),
    };
    let result = f();
    let outer = restore.outer.take().expect("set above and taken only here");
    let inner = key.with(|c| c.replace(outer));
    (result, inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static VALUE: RefCell<u32> = const { RefCell::new(0) };
    }

    #[test]
    fn scopes_nest_and_restore_the_outer_value() {
        let (inner, outer_end) = with_replaced(&VALUE, 1, || {
            VALUE.with(|v| *v.borrow_mut() += 10);
            let ((), inner_end) = with_replaced(&VALUE, 2, || {
                VALUE.with(|v| *v.borrow_mut() += 100);
            });
            assert_eq!(VALUE.with(|v| *v.borrow()), 11);
            inner_end
        });
        assert_eq!((inner, outer_end), (102, 11));
        assert_eq!(VALUE.with(|v| *v.borrow()), 0);
        let unwound = std::panic::catch_unwind(|| with_replaced(&VALUE, 5, || panic!("in scope")));
        assert!(unwound.is_err());
        assert_eq!(VALUE.with(|v| *v.borrow()), 0, "restored on unwinding");
    }
}
