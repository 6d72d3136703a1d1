//! The catalog CSV import (upload page and command line), the catalog export, and the filters
//! of the product list, as a manager uses them.

use std::sync::Arc;

use clientele::clock::SystemClock;
use clientele::domain::account::Role;
use clientele::inventory::catalog::Catalog;
use reqwest::StatusCode;

use crate::support::{clientele, init_store, open_store};
use crate::web::{TestApp, csrf_of};

const GOOD: &str = "sku,gtin,name,brand,category,currency,price,cost_minor,margin_floor,protected,complementary,attr:size,attr:colour\n\
    SCARF-RED,4006381333931,Red scarf,Maison,Scarves,EUR,49.90,2000,50,yes,GLOVES-M;HAT-1,M,red\n\
    GLOVES-M,,Leather gloves,Maison,Gloves,EUR,89,3500,,no,SCARF-RED,M,\n\
    HAT-1,96385074,Wool hat,Nordkap,Hats,EUR,25.5,900,,no,,,grey\n";

fn catalog(app: &TestApp) -> Catalog {
    Catalog::new(
        app.app.as_ref().unwrap().store.clone(),
        Arc::new(SystemClock),
    )
}

fn count(app: &TestApp, action: &str) -> usize {
    app.audit()
        .entries(1, u64::MAX, false)
        .map(Result::unwrap)
        .filter(|e| e.action == action)
        .count()
}

/// A multipart body as a browser sends the import form.
fn upload_body(csrf: Option<&str>, csv: &str) -> (String, Vec<u8>) {
    let boundary = "----clienteletestCatalog0gW";
    let csrf_part = csrf.map_or_else(String::new, |csrf| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n")
    });
    let body = csrf_part
        + &format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"products.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
        );
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

async fn upload(
    app: &TestApp,
    client: &reqwest::Client,
    csrf: Option<&str>,
    csv: &str,
) -> (StatusCode, String) {
    let (content_type, body) = upload_body(csrf, csv);
    let res = client
        .post(app.url("/products/import"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

async fn page(client: &reqwest::Client, app: &TestApp, path: &str) -> (StatusCode, String) {
    let res = client.get(app.url(path)).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test]
async fn a_catalog_file_imports_whole_once_and_a_bad_row_imports_nothing() {
    let app = TestApp::start().await;
    let manager = app.signed_in("boss", Role::Manager).await;
    let (status, form) = page(&manager, &app, "/products/import").await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("enctype=\"multipart/form-data\""));
    let csrf = csrf_of(&form);

    // One bad row (a wrong GTIN check digit on line 3) refuses the whole file.
    let bad = GOOD.replace(",,Leather gloves", ",4006381333932,Leather gloves");
    let (status, body) = upload(&app, &manager, Some(&csrf), &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("Nothing was imported"), "{body}");
    let table = body
        .split("id=\"rejections\"")
        .nth(1)
        .expect("a table of rejected rows");
    assert!(table.contains("<td>3</td><td>gtin</td>"), "{table}");
    assert!(!table.contains("<td>2</td>") && !table.contains("<td>4</td>"));
    assert!(catalog(&app).get("SCARF-RED").unwrap().is_none());
    assert_eq!(count(&app, "product.imported"), 0);

    // The good file goes in whole, decimal and minor-unit money alike.
    let (status, body) = upload(&app, &manager, Some(&csrf), GOOD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("id=\"count-created\">3<"), "{body}");
    let scarf = catalog(&app).get("SCARF-RED").unwrap().unwrap();
    assert_eq!(
        (scarf.price, scarf.cost, scarf.margin_floor_bp),
        (4990, 2000, 5000)
    );
    assert!(scarf.protected);
    assert_eq!(scarf.complementary, ["GLOVES-M", "HAT-1"]);
    assert_eq!(scarf.attributes["colour"], "red");
    let hat = catalog(&app).get("HAT-1").unwrap().unwrap();
    assert_eq!(hat.price, 2550);
    assert!(!hat.attributes.contains_key("size"));
    assert_eq!(
        catalog(&app).find_item("96385074").unwrap().as_deref(),
        Some("HAT-1")
    );
    assert_eq!(count(&app, "product.imported"), 1);
    assert_eq!(count(&app, "product.created"), 0, "one entry for the file");

    // The same file again changes nothing and writes nothing.
    let (status, body) = upload(&app, &manager, Some(&csrf), GOOD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("id=\"count-unchanged\">3<"), "{body}");
    let again = catalog(&app).get("SCARF-RED").unwrap().unwrap();
    assert_eq!(again.updated_at, scarf.updated_at);
    assert_eq!(count(&app, "product.imported"), 1);

    // A GTIN of a product outside the file is refused; so is one repeated in the file.
    let taken = "sku,name,currency,price,gtin\nMUG-1,Mug,EUR,9,96385074\n\
                 CUP-1,Cup,EUR,9,036000291452\nCUP-2,Cup,EUR,9,036000291452\n";
    let (status, body) = upload(&app, &manager, Some(&csrf), taken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("<td>2</td><td>gtin</td><td>96385074 already belongs to product HAT-1"),
        "{body}"
    );
    assert!(body.contains("<td>4</td><td>gtin</td>"), "{body}");
    assert!(catalog(&app).get("CUP-1").unwrap().is_none());

    // A price change on a protected product below its margin floor is refused, naming it.
    let cheap = "sku,name,currency,price\nSCARF-RED,Red scarf,EUR,39.99\n";
    let (status, body) = upload(&app, &manager, Some(&csrf), cheap).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("<td>2</td><td>price</td>"), "{body}");

    // A changed row updates that product only; columns left out keep their values.
    let change = "sku,name,currency,price_minor\nSCARF-RED,Red scarf,EUR,5490\n";
    let (status, body) = upload(&app, &manager, Some(&csrf), change).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("id=\"count-updated\">1<"), "{body}");
    let changed = catalog(&app).get("SCARF-RED").unwrap().unwrap();
    assert_eq!(changed.price, 5490);
    assert_eq!(changed.gtin.as_deref(), Some("4006381333931"));
    assert_eq!(changed.attributes, scarf.attributes);
    assert_eq!(count(&app, "product.imported"), 2);

    // The export reads back as the catalog: importing it changes nothing.
    let res = manager
        .get(app.url("/products/export.csv"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let export = res.text().await.unwrap();
    assert!(export.starts_with("sku,gtin,name,"), "{export}");
    let (status, body) = upload(&app, &manager, Some(&csrf), &export).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("id=\"count-unchanged\">3<"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn only_stock_keepers_import_and_the_form_needs_its_csrf_field() {
    let app = TestApp::start().await;
    let manager = app.signed_in("boss", Role::Manager).await;
    let (_, form) = page(&manager, &app, "/products/import").await;
    let csrf = csrf_of(&form);
    let (status, _) = upload(&app, &manager, None, GOOD).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let associate = app.signed_in("counter", Role::Associate).await;
    let (status, _) = page(&associate, &app, "/products/import").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = upload(&app, &associate, Some(&csrf), GOOD).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = page(&associate, &app, "/products/export.csv").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = page(&associate, &app, "/products").await;
    assert!(!list.contains("/products/import"), "no import link: {list}");
    assert!(catalog(&app).get("SCARF-RED").unwrap().is_none());
    assert_eq!(count(&app, "product.imported"), 0);
    app.stop().await;
}

#[tokio::test]
async fn the_product_list_filters_by_brand_category_protection_and_stock() {
    let app = TestApp::start().await;
    // An admin sees every location, configured or not.
    let manager = app.signed_in("chief", Role::Admin).await;
    let (_, form) = page(&manager, &app, "/products/import").await;
    let (status, body) = upload(&app, &manager, Some(&csrf_of(&form)), GOOD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let skus = |html: &str| -> Vec<String> {
        let table = html.split("id=\"products\"").nth(1).unwrap();
        table
            .split("<a href=\"/products/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().to_owned())
            .collect()
    };

    let (_, all) = page(&manager, &app, "/products").await;
    assert_eq!(skus(&all), ["GLOVES-M", "HAT-1", "SCARF-RED"]);
    let (_, maison) = page(&manager, &app, "/products?brand=maison").await;
    assert_eq!(skus(&maison), ["GLOVES-M", "SCARF-RED"]);
    assert!(
        maison.contains("<option value=\"Maison\" selected>"),
        "the filter stays in the form: {maison}"
    );
    let (_, hats) = page(&manager, &app, "/products?category=Hats&q=wool").await;
    assert_eq!(skus(&hats), ["HAT-1"]);
    assert!(hats.contains("<option value=\"Hats\" selected>"));
    assert!(hats.contains("value=\"wool\""));
    let (_, protected) = page(&manager, &app, "/products?protected=yes").await;
    assert_eq!(skus(&protected), ["SCARF-RED"]);
    assert!(protected.contains("<option value=\"yes\" selected>"));
    let (_, open) = page(&manager, &app, "/products?protected=no&brand=Maison").await;
    assert_eq!(skus(&open), ["GLOVES-M"]);

    // Stock at a location: a receipt of scarves at W1; the others have none there.
    let store = app.app.as_ref().unwrap().store.clone();
    let ledger = clientele::inventory::ledger::Ledger::new(
        store.clone(),
        Arc::new(SystemClock),
        Catalog::new(store, Arc::new(SystemClock)),
    );
    let receipt: clientele::inventory::ledger::MovementInput = serde_json::from_value(
        serde_json::json!({"kind": "receipt", "sku": "SCARF-RED", "location": "W1", "quantity_milli": 3000, "reference": "PO-1"}),
    )
    .unwrap();
    ledger
        .record(&receipt, clientele::audit::Actor::system("test"))
        .await
        .unwrap();
    let (status, out) = page(&manager, &app, "/products?stock=out&location=w1").await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(skus(&out), ["GLOVES-M", "HAT-1"]);
    assert!(out.contains("Available at W1"), "{out}");
    assert!(out.contains("<option value=\"out\" selected>"));
    let (_, low) = page(
        &manager,
        &app,
        "/products?stock=low&location=W1&brand=Maison",
    )
    .await;
    assert_eq!(skus(&low), ["GLOVES-M"]);
    let (status, _) = page(&manager, &app, "/products?stock=out").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stock needs a location"
    );
    let (status, _) = page(&manager, &app, "/products?protected=maybe").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.stop().await;
}

#[test]
fn import_products_from_the_command_line_is_all_or_nothing_and_safe_to_repeat() {
    let dir = tempfile::tempdir().unwrap();
    init_store(dir.path());
    let file = dir.path().join("products.csv");
    std::fs::write(&file, GOOD).unwrap();
    let run = |path: &std::path::Path| {
        clientele(dir.path())
            .args(["import", "products"])
            .arg(path)
            .output()
            .unwrap()
    };
    let first = run(&file);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout.contains("3 rows, 3 products created, 0 changed, 0 unchanged"),
        "{stdout}"
    );
    let again = run(&file);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(
        stdout.contains("3 rows, 0 products created, 0 changed, 3 unchanged"),
        "{stdout}"
    );

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "sku,name,currency,price\nNEW-1,New,EUR,1\nBAD SKU,x,EUR,abc\n",
    )
    .unwrap();
    let refused = run(&bad);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("line 3, price:"), "{stderr}");
    assert!(stderr.contains("line 3, sku:"), "{stderr}");
    assert!(!stderr.contains("line 2"), "{stderr}");
    let store = open_store(dir.path());
    let catalog = Catalog::new(store, Arc::new(SystemClock));
    assert!(catalog.get("NEW-1").unwrap().is_none());
    assert!(catalog.get("SCARF-RED").unwrap().is_some());
}
