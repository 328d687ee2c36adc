use super::*;

const TENANT: &str = "(tenant_id = (current_setting('app.current_tenant'::text))::integer)";

fn policy(name: &str, cmd: char, permissive: bool, using: Option<&str>, check: Option<&str>) -> Policy {
    let markers = Markers::new("app.current_tenant", "", false);
    Policy {
        name: name.into(),
        cmd,
        permissive,
        using: using.map(str::to_string),
        check: check.map(str::to_string),
        using_reads: using.is_some_and(|e| markers.found_in(e)),
        check_reads: check.is_some_and(|e| markers.found_in(e)),
        roles: vec!["app_proxy".into()],
        to: vec!["public".into()],
    }
}

fn roles() -> Vec<String> {
    vec!["app_proxy".into()]
}

fn privileges(all: bool) -> BTreeMap<String, [bool; 4]> {
    BTreeMap::from([("app_proxy".to_string(), [true, all, all, all])])
}

fn missing(v: &Verdict) -> Vec<Command> {
    v.missing.keys().copied().collect()
}

#[test]
fn per_command_tenant_policies_are_clean() {
    let policies = [
        policy("s", 'r', true, Some(TENANT), None),
        policy("i", 'a', true, None, Some(TENANT)),
        policy("u", 'w', true, Some(TENANT), Some(TENANT)),
        policy("d", 'd', true, Some(TENANT), None),
    ];
    assert_eq!(evaluate(&policies, &roles(), &privileges(true)), Verdict::default());
}

#[test]
fn one_all_policy_covers_every_command_and_its_using_checks_inserts() {
    let policies = [policy("all", '*', true, Some(TENANT), None)];
    assert_eq!(evaluate(&policies, &roles(), &privileges(true)), Verdict::default());
}

#[test]
fn a_command_without_permissive_policy_is_missing_only_when_granted() {
    let policies = [policy("s", 'r', true, Some(TENANT), None), policy("r", '*', false, Some(TENANT), None)];
    let v = evaluate(&policies, &roles(), &privileges(true));
    assert_eq!(missing(&v), [Command::Insert, Command::Update, Command::Delete]);
    assert!(v.leaks.is_empty());
    assert!(evaluate(&policies, &roles(), &privileges(false)).missing.is_empty(), "SELECT-only grant");
}

#[test]
fn a_permissive_policy_without_the_tenant_leaks_unless_a_restrictive_one_confines() {
    let open = policy("open", '*', true, Some("true"), None);
    let v = evaluate(std::slice::from_ref(&open), &roles(), &privileges(true));
    let (cmds, who) = &v.leaks["open"];
    assert_eq!(cmds.len(), 4);
    assert_eq!(who.iter().collect::<Vec<_>>(), ["app_proxy"]);

    let confined = [open.clone(), policy("tenant", '*', false, Some(TENANT), None)];
    assert_eq!(evaluate(&confined, &roles(), &privileges(true)), Verdict::default());

    // A restrictive policy only for SELECT leaves the other commands open.
    let partly = [open, policy("tenant", 'r', false, Some(TENANT), None)];
    let v = evaluate(&partly, &roles(), &privileges(true));
    assert_eq!(v.leaks["open"].0, BTreeSet::from([Command::Insert, Command::Update, Command::Delete]));
}

#[test]
fn an_update_policy_whose_check_ignores_the_tenant_leaks() {
    let policies = [policy("s", 'r', true, Some(TENANT), None), policy("u", 'w', true, Some(TENANT), Some("true"))];
    let v = evaluate(&policies, &roles(), &privileges(false));
    assert_eq!(v.leaks["u"].0, BTreeSet::from([Command::Update]));
}

#[test]
fn policies_for_other_roles_do_not_apply() {
    let mut admin = policy("admin", '*', true, Some("true"), Some("true"));
    admin.roles.clear();
    admin.to = vec!["admin_role".into()];
    let v = evaluate(&[admin], &roles(), &privileges(false));
    assert!(v.leaks.is_empty());
    assert_eq!(missing(&v), [Command::Select]);
}

#[test]
fn calls_of_functions_that_read_the_setting_count() {
    let markers = Markers::new("app.current_tenant", "", false);
    let calls = [("current_tenant".to_string(), "SELECT current_setting('app.current_tenant')::int".to_string())];
    assert!(reads_tenant("(tenant_id = auth.current_tenant())", &calls, &markers));
    assert!(!reads_tenant("(tenant_id > 0)", &calls, &markers));
    let other = [("now".to_string(), "now".to_string())];
    assert!(!reads_tenant("(created < now())", &other, &markers));
}

#[test]
fn fixes_fit_the_command_and_mode() {
    let mut params =
        Params { tenant_column: "tenant_id".into(), tenant_setting: "app.current_tenant".into(), ..Params::default() };
    assert_eq!(tenant_expr(&params, "bigint"), "tenant_id = current_setting('app.current_tenant')::bigint");
    params.strict = true;
    assert_eq!(tenant_expr(&params, "bigint"), "tenant_id = (SELECT rlsproxy.tenant_id())");
    assert_eq!(tenant_expr(&params, "text"), "tenant_id = (SELECT rlsproxy.tenant())");
    assert_eq!(tenant_expr(&params, "uuid"), "tenant_id = (SELECT rlsproxy.tenant_uuid())");
    assert_eq!(clauses('r', "x"), "USING (x)");
    assert_eq!(clauses('a', "x"), "WITH CHECK (x)");
    assert_eq!(clauses('*', "x"), "USING (x) WITH CHECK (x)");
    assert_eq!(unique_name(&["p", "p_2"], "p"), "p_3");
    assert_eq!(unique_name(&[], "p"), "p");
}
