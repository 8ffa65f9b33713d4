//! A small owned 2-D image, row-major (`x` fastest), used for slices and masks.

/// An owned 2-D image; pixel `(x, y)` is at `data[x + width * y]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Image2D<T> {
    /// Pixels per row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Pixels, `x` fastest.
    pub data: Vec<T>,
}

impl<T: Copy> Image2D<T> {
    /// Wraps a pixel buffer.
    ///
    /// # Panics
    /// If `data.len() != width * height` (a programming error, never user data).
    pub fn new(width: usize, height: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), width * height, "image buffer size mismatch");
        Self {
            width,
            height,
            data,
        }
    }

    /// An image with every pixel set to `value`.
    pub fn filled(width: usize, height: usize, value: T) -> Self {
        Self {
            width,
            height,
            data: vec![value; width * height],
        }
    }

    /// Pixel `(x, y)`.
    ///
    /// # Panics
    /// Outside the image.
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> T {
        debug_assert!(x < self.width && y < self.height);
        self.data[x + self.width * y]
    }

    /// Sets pixel `(x, y)`.
    #[inline]
    pub fn set(&mut self, x: usize, y: usize, value: T) {
        debug_assert!(x < self.width && y < self.height);
        self.data[x + self.width * y] = value;
    }

    /// A new image with `f` applied to every pixel.
    pub fn map<U: Copy>(&self, f: impl Fn(T) -> U) -> Image2D<U> {
        Image2D {
            width: self.width,
            height: self.height,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }
}

impl Image2D<f32> {
    /// Separable Gaussian blur with edge replication (`sigma` in pixels; 0 copies).
    pub fn gaussian_blur(&self, sigma: f32) -> Image2D<f32> {
        if sigma <= 0.0 || self.data.is_empty() {
            return self.clone();
        }
        let radius = (3.0 * sigma).ceil() as usize;
        let mut kernel: Vec<f32> = (0..=2 * radius)
            .map(|t| {
                let d = t as f32 - radius as f32;
                (-(d * d) / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let norm: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= norm);
        let (w, h) = (self.width, self.height);
        let clamp = |i: usize, n: usize| (i.saturating_sub(radius)).min(n - 1);
        // Along rows: the interior reads a contiguous window, the borders replicate.
        let mut rows = vec![0.0f32; w * h];
        for y in 0..h {
            let src = &self.data[w * y..w * (y + 1)];
            let dst = &mut rows[w * y..w * (y + 1)];
            for (x, out) in dst.iter_mut().enumerate() {
                *out = if x >= radius && x + radius < w {
                    src[x - radius..=x + radius]
                        .iter()
                        .zip(&kernel)
                        .map(|(v, k)| v * k)
                        .sum()
                } else {
                    kernel
                        .iter()
                        .enumerate()
                        .map(|(t, k)| k * src[clamp(x + t, w)])
                        .sum()
                };
            }
        }
        // Along columns: whole rows weighted and added.
        let mut out = vec![0.0f32; w * h];
        for y in 0..h {
            let dst = &mut out[w * y..w * (y + 1)];
            for (t, k) in kernel.iter().enumerate() {
                let yy = clamp(y + t, h);
                for (o, v) in dst.iter_mut().zip(&rows[w * yy..w * (yy + 1)]) {
                    *o += k * v;
                }
            }
        }
        Image2D::new(w, h, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blur_matches_a_direct_convolution_with_replicated_edges() {
        let img = Image2D::new(9, 7, (0..63).map(|i| ((i * 37) % 11) as f32).collect());
        let sigma = 1.2f32;
        let r = (3.0 * sigma).ceil() as isize;
        let k: Vec<f32> = (-r..=r)
            .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let norm: f32 = k.iter().sum::<f32>().powi(2);
        let blurred = img.gaussian_blur(sigma);
        for y in 0..7isize {
            for x in 0..9isize {
                let mut acc = 0.0;
                for (i, ky) in k.iter().enumerate() {
                    for (j, kx) in k.iter().enumerate() {
                        let sy = (y + i as isize - r).clamp(0, 6) as usize;
                        let sx = (x + j as isize - r).clamp(0, 8) as usize;
                        acc += ky * kx * img.get(sx, sy);
                    }
                }
                let got = blurred.get(x as usize, y as usize);
                assert!(
                    (got - acc / norm).abs() < 1e-4,
                    "({x},{y}): {got} vs {}",
                    acc / norm
                );
            }
        }
        assert_eq!(img.gaussian_blur(0.0), img);
    }
}
