//! §5: a user never seen is fetched from Clerk once and stored; after that Clerk is not asked.

use clerk_users::{api::users::User, testkit::TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_request_fetches_once_then_serves_from_the_database() {
    let app = TestApp::spawn().await;
    let user_id = app.clerk.new_user();
    let clerk_json = app.clerk.user_json(&user_id).unwrap();

    let resp = app.get_me(&app.token_for(&user_id)).await;
    assert_eq!(resp.status(), 200);
    let user: User = resp.json().await.unwrap();
    assert_eq!(user.clerk_id, user_id);
    assert_eq!(user.first_name.as_deref(), Some("Ada"));
    assert_eq!(user.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(user.image_url.as_deref(), clerk_json["image_url"].as_str());
    // The primary address is the second entry; it is chosen by id.
    assert_eq!(
        user.email.as_deref(),
        clerk_json["email_addresses"][1]["email_address"].as_str()
    );
    assert_eq!(user.username, None);
    assert!(user.metadata.is_empty());
    assert_eq!(app.clerk.user_calls_for(&user_id), 1);
    assert_eq!(app.user_rows(Some(&user_id)).await, 1);

    for _ in 0..5 {
        let again: User = app
            .get_me(&app.token_for(&user_id))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again, user);
    }
    assert_eq!(
        app.clerk.user_calls(),
        1,
        "known users never reach the Backend API"
    );
}
