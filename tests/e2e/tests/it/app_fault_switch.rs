//! The apps' runtime fault switch (`cutover-app --admin-listen`, `PUT /fault`): with it at 20 %,
//! exactly 20 of every 100 API requests answer 503, health checks never; off again, none fail.
//! The story (issue 10) uses it to make a rollout gate fail.

use cutover_e2e::app::Flavor;
use cutover_e2e::App;

fn statuses(app: &App, target: &str, count: usize) -> Vec<u16> {
    let mut client = app.client();
    (0..count).map(|_| client.get(target).status).collect()
}

#[test]
fn the_fault_switch_fails_exactly_the_share_asked_for() {
    let app = App::start(Flavor::New);
    let unknown_user = "/api/chat/users/00000000-0000-0000-0000-000000000001";
    assert!(statuses(&app, unknown_user, 100).iter().all(|s| *s == 404));

    app.set_fault(20);
    let answered = statuses(&app, unknown_user, 200);
    assert_eq!(answered.iter().filter(|s| **s == 503).count(), 40);
    assert_eq!(answered.iter().filter(|s| **s == 404).count(), 160);
    assert!(statuses(&app, "/healthz", 50).iter().all(|s| *s == 200));

    app.set_fault(0);
    assert!(statuses(&app, unknown_user, 100).iter().all(|s| *s == 404));
}
