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
        if sigma <= 0.0 {
            return self.clone();
        }
        let radius = (3.0 * sigma).ceil() as isize;
        let kernel: Vec<f32> = (-radius..=radius)
            .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
            .collect();
        let norm: f32 = kernel.iter().sum();
        let (w, h) = (self.width as isize, self.height as isize);
        let pass = |src: &Image2D<f32>, horizontal: bool| {
            let mut out = src.clone();
            for y in 0..h {
                for x in 0..w {
                    let mut acc = 0.0;
                    for (t, kv) in kernel.iter().enumerate() {
                        let d = t as isize - radius;
                        let (sx, sy) = if horizontal {
                            ((x + d).clamp(0, w - 1), y)
                        } else {
                            (x, (y + d).clamp(0, h - 1))
                        };
                        acc += kv * src.get(sx as usize, sy as usize);
                    }
                    out.set(x as usize, y as usize, acc / norm);
                }
            }
            out
        };
        pass(&pass(self, true), false)
    }
}
