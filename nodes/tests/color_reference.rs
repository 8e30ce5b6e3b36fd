//! The colour conversions lct performs, against values computed by the reference OpenColorIO
//! (`fixtures/ocio_reference.py`, PyPI `opencolorio`, writes `fixtures/ocio_reference.json`).

use lct_nodes::{ColorConfig, ColorSpace};

#[test]
fn conversions_match_the_reference_opencolorio() {
    let text = include_str!("fixtures/ocio_reference.json");
    let document: serde_json::Value = serde_json::from_str(text).unwrap();
    let config = ColorConfig::load(document["config"].as_str().unwrap()).unwrap();
    let cases = document["cases"].as_array().unwrap();
    assert!(
        cases.len() >= 6,
        "the fixture holds {} conversions",
        cases.len()
    );
    let triples = |value: &serde_json::Value| -> Vec<f32> {
        value
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rgb| {
                rgb.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect()
    };
    for case in cases {
        let (from, to) = (case["from"].as_str().unwrap(), case["to"].as_str().unwrap());
        let mut samples = triples(&case["input"]);
        let expected = triples(&case["output"]);
        let (source, target) = (
            config.color_space(from).unwrap(),
            config.color_space(to).unwrap(),
        );
        assert_eq!(source, ColorSpace::from_canonical(from));
        config.convert(&mut samples, 3, &source, &target).unwrap();
        for (i, (got, want)) in samples.iter().zip(&expected).enumerate() {
            let tolerance = 2e-5 + 1e-4 * want.abs();
            assert!(
                (got - want).abs() <= tolerance,
                "{from} -> {to}, sample {} channel {}: lct {got}, OpenColorIO {want}",
                i / 3,
                i % 3
            );
        }
    }
}

#[test]
fn srgb_to_acescg_and_back_stays_within_one_code_value() {
    let config = ColorConfig::default_config();
    let mut samples: Vec<f32> = (0..=255u32)
        .flat_map(|v| {
            let x = v as f32 / 255.0;
            [x, 1.0 - x, (x * 7.0) % 1.0]
        })
        .collect();
    let original = samples.clone();
    config
        .convert(&mut samples, 3, &ColorSpace::srgb(), &ColorSpace::acescg())
        .unwrap();
    config
        .convert(&mut samples, 3, &ColorSpace::acescg(), &ColorSpace::srgb())
        .unwrap();
    for (got, want) in samples.iter().zip(&original) {
        assert!(
            (got - want).abs() < 1.0 / 255.0,
            "{want} came back as {got}"
        );
    }
}
