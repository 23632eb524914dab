//! What a registered descriptor costs per connection: register a socket in a
//! sparse fixed-file table and take it out again (IORING_REGISTER_FILES_UPDATE,
//! twice), against the fget/fput it saves on every op; also the same pair as ring
//! ops (IORING_OP_FILES_UPDATE) in one enter, and two no-ops in one enter.
use io_uring::{opcode, IoUring};
use std::time::Instant;

fn main() {
    let mut ring: IoUring = IoUring::builder().setup_coop_taskrun().build(256).unwrap();
    ring.submitter().register_files_sparse(4096).unwrap();
    let n = 200_000;
    let fds: Vec<i32> = (0..64)
        // SAFETY: socket(2) takes no pointers; the fds are only registered.
        .map(|_| unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })
        .collect();
    // syscall pair
    let t = Instant::now();
    for i in 0..n {
        let slot = (i % 64) as u32;
        ring.submitter()
            .register_files_update(slot, &[fds[i % 64]])
            .unwrap();
        ring.submitter().register_files_update(slot, &[-1]).unwrap();
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("register + unregister by io_uring_register: {per:.0} ns per pair");
    // as ring ops, two per pair, each submitted and reaped
    let t = Instant::now();
    let none = [-1i32];
    for i in 0..n {
        let fd = [fds[i % 64]];
        let slot = (i % 64) as i32;
        let a = opcode::FilesUpdate::new(fd.as_ptr(), 1)
            .offset(slot)
            .build();
        let b = opcode::FilesUpdate::new(none.as_ptr(), 1)
            .offset(slot)
            .build();
        // SAFETY: both entries point at `fd` and `none`, which outlive the
        // submit_and_wait that completes them.
        unsafe {
            ring.submission().push(&a).unwrap();
            ring.submission().push(&b).unwrap();
        }
        ring.submit_and_wait(2).unwrap();
        for cqe in ring.completion() {
            assert!(cqe.result() >= 0, "{}", cqe.result());
        }
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("register + unregister as two ring ops (one enter): {per:.0} ns per pair");
    // baseline: one enter with two nops
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: a no-op points at nothing.
        unsafe {
            ring.submission().push(&opcode::Nop::new().build()).unwrap();
            ring.submission().push(&opcode::Nop::new().build()).unwrap();
        }
        ring.submit_and_wait(2).unwrap();
        for _ in ring.completion() {}
    }
    let per = t.elapsed().as_nanos() as f64 / n as f64;
    println!("baseline: two nops, one enter: {per:.0} ns");
}
