// Scratch diagnostic (not committed).
use super::*;
use crate::train::data::load_volumes;

fn report(name: &str, model: &Model, eps: &[Episode], device: &Device) {
    let mut fg_in = 0.0; let mut fg_n = 0.0; let mut bg = 0.0; let mut bg_n = 0.0;
    let mut dices = vec![Vec::new(); 5];
    let ths = [0.1f32, 0.2, 0.3, 0.4, 0.5];
    let mut maxrow = 0.0; let mut rows = 0.0;
    for ep in eps {
        let support = model.encode_support(stack(&ep.support_images, device), stack(&ep.support_masks, device));
        let out = model.forward_query(&support, stack(&ep.query_images, device));
        let a = out.attention[0].map.clone();
        let m: Vec<f32> = a.max_dim(2).into_data().try_to_vec::<f32>().unwrap();
        maxrow += m.iter().sum::<f32>() as f64; rows += m.len() as f64;
        let p: Vec<f32> = sigmoid(out.logits).into_data().try_to_vec::<f32>().unwrap();
        let per = ep.query_masks[0].data.len();
        for (q, t) in ep.query_masks.iter().enumerate() {
            let pq = &p[q * per..(q + 1) * per];
            if !t.data.contains(&1.0) { continue; }
            for (pv, tv) in pq.iter().zip(&t.data) {
                if *tv > 0.5 { fg_in += *pv as f64; fg_n += 1.0 } else { bg += *pv as f64; bg_n += 1.0 }
            }
            for (k, th) in ths.iter().enumerate() {
                let (mut i, mut s) = (0.0, 0.0);
                for (pv, tv) in pq.iter().zip(&t.data) { let b = if *pv > *th {1.0} else {0.0}; i += b * *tv as f64; s += b + *tv as f64; }
                dices[k].push(2.0 * i / s.max(1e-9));
            }
        }
    }
    let md: Vec<String> = dices.iter().map(|d| format!("{:.3}", d.iter().sum::<f64>() / d.len().max(1) as f64)).collect();
    eprintln!("{name}: T {:.3} mean p fg {:.3} bg {:.3}; Dice@0.1..0.5 {:?}; mean max attention (stage 1) {:.4}",
        model.cross_attention_mapper().temperature(), fg_in / fg_n, bg / bg_n, md, maxrow / rows);
}

#[test]
#[ignore]
fn diagnose() {
    let device = Device::flex();
    let vols = load_volumes(std::path::Path::new("/work/shared/data/volumes/openkbp/validation"), Some(8), &mut |_, _| {}).unwrap();
    let data = TrainingData::new(vols, 0, 1);
    let mut cfg = TrainConfig::new(ModelConfig::lite());
    cfg.seed = 7;
    cfg.episodes.p_outside = 0.0;
    cfg.episodes.p_cross_patient = 0.0;
    cfg.episodes.augment = crate::train::augment::AugmentConfig { flip: 0.0, rot90: 0.0, intensity_flip: 0.0, edge_target: 0.0, affine: 0.0, contrast: 0.0, blur: 0.0, noise: 0.0 };
    let eps: Vec<Episode> = (0..12).filter_map(|n| data.episode(&cfg, n)).collect();
    let trained = Model::load_weights(&ModelConfig::lite(), std::path::Path::new("/work/runs/lite-cpu3/latest.bpk"), &device).unwrap();
    report("checkpoint", &trained, &eps, &device);
    let fresh = ModelConfig::lite().init(&device);
    report("fresh", &fresh, &eps, &device);
    let tied = ModelConfig::lite().init(&device).with_identity_attention_projections();
    report("fresh identity W", &tied, &eps, &device);
    let tied2 = trained.clone().with_identity_attention_projections();
    report("checkpoint identity W", &tied2, &eps, &device);
}

#[test]
#[ignore]
fn dump() {
    let vols = load_volumes(std::path::Path::new("/work/shared/data/volumes/openkbp/validation"), Some(8), &mut |_, _| {}).unwrap();
    let data = TrainingData::new(vols, 0, 1);
    let mut cfg = TrainConfig::new(ModelConfig::lite());
    cfg.seed = 7;
    cfg.episodes.p_outside = 0.0;
    cfg.episodes.p_cross_patient = 0.0;
    for n in 0..4u64 {
        let ep = data.episode(&cfg, n).unwrap();
        let size = ep.query_images[0].width;
        let all: Vec<(&Image2D<f32>, &Image2D<f32>)> = ep.support_images.iter().zip(&ep.support_masks).chain(ep.query_images.iter().zip(&ep.query_masks)).collect();
        let mut img = image::RgbImage::new((size * all.len()) as u32, size as u32);
        for (k, (im, m)) in all.iter().enumerate() {
            let (lo, hi) = im.data.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            for y in 0..size { for x in 0..size {
                let v = ((im.data[y * size + x] - lo) / (hi - lo + 1e-6) * 255.0) as u8;
                let mm = m.data[y * size + x] > 0.5;
                img.put_pixel((k * size + x) as u32, y as u32, if mm { image::Rgb([255, v / 2, v / 2]) } else { image::Rgb([v, v, v]) });
            }}
        }
        eprintln!("episode {n}: S {} Q {} fg {:?}", ep.support_images.len(), ep.query_images.len(), ep.query_masks.iter().map(|m| m.data.iter().sum::<f32>()).collect::<Vec<_>>());
        img.save(format!("/tmp/ep{n}.png")).unwrap();
    }
}

#[test]
#[ignore]
fn short_run() {
    use burn::optim::{AdamWConfig, GradientsParams};
    let device = Device::flex().autodiff();
    let vdev = Device::flex();
    let vols = load_volumes(std::path::Path::new("/work/shared/data/volumes/openkbp/validation"), Some(8), &mut |_, _| {}).unwrap();
    let vdata = TrainingData::new(vols, 0, 1);
    let mut vcfg = TrainConfig::new(ModelConfig::lite());
    vcfg.seed = 7;
    vcfg.episodes.p_outside = 0.0;
    vcfg.episodes.p_cross_patient = 0.0;
    vcfg.episodes.augment = crate::train::augment::AugmentConfig { flip: 0.0, rot90: 0.0, intensity_flip: 0.0, edge_target: 0.0, affine: 0.0, contrast: 0.0, blur: 0.0, noise: 0.0 };
    let veps: Vec<Episode> = (0..12).filter_map(|n| vdata.episode(&vcfg, n)).collect();
    let tvols = load_volumes(std::path::Path::new("/work/shared/data/volumes/openkbp/train"), Some(40), &mut |_, _| {}).unwrap();
    let data = TrainingData::new(tvols, 0, 1);
    let mut cfg = TrainConfig::new(ModelConfig::lite());
    cfg.episodes.queries = 6;
    let lr: f64 = std::env::var("LR").ok().and_then(|v| v.parse().ok()).unwrap_or(3e-4);
    let steps: usize = std::env::var("STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let mut model = ModelConfig::lite().init(&device).with_top_k0(5);
    let mut optim = AdamWConfig::new().with_weight_decay(1e-3).init();
    let mut n = 0u64;
    let mut avg = 0.0;
    for step in 0..=steps {
        if step % 20 == 0 {
            report(&format!("step {step} loss {avg:.3}"), &model.clone().valid(), &veps, &vdev);
        }
        if step == steps { break; }
        let mut total = None;
        for _ in 0..2 {
            let ep = loop { n += 1; if let Some(e) = data.episode(&cfg, n) { break e; } };
            let (loss, _) = episode_loss(&model, &ep, &device);
            total = Some(match total { None => loss, Some(t) => t + loss });
        }
        let loss = total.unwrap() / 2.0;
        avg = 0.9 * avg + 0.1 * loss.clone().inner().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr_now = lr * ((step + 1) as f64 / 20.0).min(1.0);
        model = optim.step(lr_now, model, grads);
        model = model.ema_update(0.99);
    }
}
