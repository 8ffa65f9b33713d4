// Slice renderer: one view of a volume with window/level, structure overlays and an
// optional heatmap. Mirrors src/ui/render/cpu.rs; the rules (window, heat colour map and
// opacity, blending, outlines) are src/display/mod.rs's.
//
// The whole volume and label map live in 3-D textures; a view only changes uniforms.
// Fragments are mapped from framebuffer pixels to display pixels (u, v) through the image
// rectangle, and from (u, v) to voxels through the view mapping (axes and flips).

struct View {
    // Image rectangle in framebuffer pixels: min.xy, size.zw.
    image_rect_px: vec4<f32>,
    // n_u, n_v, hatch period in framebuffer pixels, heatmap opacity.
    sizes: vec4<f32>,
    // u_axis, v_axis, u_flip, v_flip
    mapping: vec4<u32>,
    // view axis, slice index, working axis, flags (1: labels, 2: heat, 4: sRGB target)
    slice: vec4<u32>,
    // window low, window width, dequantise offset, dequantise scale
    window: vec4<f32>,
    // volume dims xyz, heat slice (working-axis index)
    dims: vec4<u32>,
    // heat size (w, h), working-axis in-plane axes (a, b) as floats
    heat: vec4<f32>,
};

@group(0) @binding(0) var volume_tex: texture_3d<u32>;
@group(0) @binding(1) var label_tex: texture_3d<u32>;
// Label colours: texel (value % 256, value / 256) = sRGB colour, alpha = opacity.
@group(0) @binding(2) var lut_tex: texture_2d<f32>;
// Texel (working slice, value % 256) = 1 when that structure is predicted there.
@group(0) @binding(3) var state_tex: texture_2d<u32>;

@group(1) @binding(0) var<uniform> view: View;
@group(1) @binding(1) var heat_tex: texture_2d<f32>;
@group(1) @binding(2) var heat_sampler: sampler;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
};

// One triangle covering the callback's viewport.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    var out: VertexOut;
    let x = f32(i32(index & 1u) * 4 - 1);
    let y = f32(i32(index >> 1u) * 4 - 1);
    out.position = vec4<f32>(x, y, 0.0, 1.0);
    return out;
}

// Display position (continuous, pixel (0,0) covers [0,1)²) of a framebuffer position.
fn display_of(frag: vec2<f32>) -> vec2<f32> {
    return (frag - view.image_rect_px.xy) / view.image_rect_px.zw * view.sizes.xy;
}

// Voxel index of an integer display pixel (caller checks bounds).
fn voxel_of(d: vec2<i32>) -> vec3<i32> {
    var p = vec3<i32>(0, 0, 0);
    let n = vec2<i32>(view.sizes.xy);
    p[view.slice.x] = i32(view.slice.y);
    var u = d.x;
    var v = d.y;
    if (view.mapping.z == 1u) { u = n.x - 1 - u; }
    if (view.mapping.w == 1u) { v = n.y - 1 - v; }
    p[view.mapping.x] = u;
    p[view.mapping.y] = v;
    return p;
}

fn inside(d: vec2<f32>) -> bool {
    return d.x >= 0.0 && d.y >= 0.0 && d.x < view.sizes.x && d.y < view.sizes.y;
}

fn label_at_display(d: vec2<f32>) -> u32 {
    if (!inside(d)) { return 0u; }
    return textureLoad(label_tex, voxel_of(vec2<i32>(floor(d))), 0).r;
}

fn heat_colour(t_in: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(0.0, 0.0, 0.02),
        vec3<f32>(0.34, 0.06, 0.43),
        vec3<f32>(0.73, 0.21, 0.33),
        vec3<f32>(0.98, 0.55, 0.04),
        vec3<f32>(0.99, 1.0, 0.64),
    );
    let t = clamp(t_in, 0.0, 1.0) * 4.0;
    let i = min(u32(floor(t)), 3u);
    let f = t - f32(i);
    return mix(stops[i], stops[i + 1u], f);
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let d = display_of(in.position.xy);
    if (!inside(d)) {
        discard;
    }
    let ijk = voxel_of(vec2<i32>(floor(d)));
    let raw = textureLoad(volume_tex, ijk, 0).r;
    let value = f32(raw) / view.window.w + view.window.z;
    let grey = clamp((value - view.window.x) / view.window.y, 0.0, 1.0);
    // Quantise like the CPU path (8-bit sRGB) so both render the same picture.
    var rgb = vec3<f32>(round(grey * 255.0) / 255.0);

    let flags = view.slice.w;
    let work = view.slice.z;
    if ((flags & 2u) != 0u && u32(ijk[work]) == view.dims.w) {
        let a = u32(view.heat.z);
        let b = u32(view.heat.w);
        let uv = (vec2<f32>(f32(ijk[a]), f32(ijk[b])) + 0.5) / view.heat.xy;
        let t = textureSampleLevel(heat_tex, heat_sampler, uv, 0.0).r;
        if (t > 0.0) {
            rgb = mix(rgb, heat_colour(t), view.sizes.w * min(t, 1.0));
        }
    }

    if ((flags & 1u) != 0u) {
        let l = textureLoad(label_tex, ijk, 0).r;
        if (l != 0u) {
            let c = textureLoad(lut_tex, vec2<i32>(i32(l % 256u), i32(l / 256u)), 0);
            if (c.a > 0.0) {
                // Outline: a neighbouring screen pixel shows another label.
                let step = view.sizes.xy / view.image_rect_px.zw;
                let edge = label_at_display(d + vec2<f32>(step.x, 0.0)) != l
                    || label_at_display(d - vec2<f32>(step.x, 0.0)) != l
                    || label_at_display(d + vec2<f32>(0.0, step.y)) != l
                    || label_at_display(d - vec2<f32>(0.0, step.y)) != l;
                var alpha = c.a;
                if (edge) {
                    alpha = max(alpha, 0.9);
                } else {
                    let slice_index = ijk[work];
                    let predicted = textureLoad(state_tex, vec2<i32>(slice_index, i32(l % 256u)), 0).r;
                    if (predicted == 1u) {
                        let period = view.sizes.z;
                        let phase = (in.position.x + in.position.y) % period;
                        if (phase >= period * 0.5) {
                            alpha = alpha * 0.25;
                        }
                    }
                }
                rgb = mix(rgb, c.rgb, alpha);
            }
        }
    }

    if ((flags & 4u) != 0u) {
        rgb = srgb_to_linear(rgb);
    }
    return vec4<f32>(rgb, 1.0);
}
