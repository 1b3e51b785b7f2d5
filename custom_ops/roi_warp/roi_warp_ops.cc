// Op definitions and shape functions of MncRoiWarp / MncRoiWarpGrad. The
// sampling formula is at the top of roi_warp_kernels.cc.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "roi_warp_validate.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace mnc_roi_warp {
namespace {

using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

absl::Status AttrsFromContext(InferenceContext* c, int* crop, int* pooled) {
  float spatial_scale;
  TF_RETURN_IF_ERROR(c->GetAttr("crop_size", crop));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_size", pooled));
  TF_RETURN_IF_ERROR(c->GetAttr("spatial_scale", &spatial_scale));
  return ValidateAttrs(*crop, *pooled, spatial_scale);
}

// Like WithRank, but the message names the input and its layout.
absl::Status InputWithRank(InferenceContext* c, int input, int rank, const char* name,
                           const char* layout, ShapeHandle* out) {
  const ShapeHandle s = c->input(input);
  if (c->RankKnown(s) && c->Rank(s) != rank) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be rank ", rank, " ", layout,
                                                   ", got shape ", c->DebugString(s)));
  }
  return c->WithRank(s, rank, out);
}

// Checks features / boxes / box_indices at inputs first..first+2 and
// returns the merged box count R and the channel count C.
absl::Status WarpInputs(InferenceContext* c, int first, ShapeHandle* features,
                        DimensionHandle* num_boxes) {
  ShapeHandle boxes, box_indices;
  TF_RETURN_IF_ERROR(InputWithRank(c, first, 4, "features", "[B, H, W, C]", features));
  TF_RETURN_IF_ERROR(InputWithRank(c, first + 1, 2, "boxes", "[R, 4]", &boxes));
  TF_RETURN_IF_ERROR(InputWithRank(c, first + 2, 1, "box_indices", "[R]", &box_indices));
  const DimensionHandle width = c->Dim(boxes, 1);
  if (c->ValueKnown(width) && c->Value(width) != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("boxes must have shape [R, 4], got shape ", c->DebugString(boxes)));
  }
  if (!c->Merge(c->Dim(boxes, 0), c->Dim(box_indices, 0), num_boxes).ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("box_indices must have shape [R] with R = boxes.shape[0], got boxes ",
                     c->DebugString(boxes), " and box_indices ", c->DebugString(box_indices)));
  }
  return absl::OkStatus();
}

absl::Status RoiWarpShape(InferenceContext* c) {
  int crop, pooled;
  TF_RETURN_IF_ERROR(AttrsFromContext(c, &crop, &pooled));
  ShapeHandle features;
  DimensionHandle num_boxes;
  TF_RETURN_IF_ERROR(WarpInputs(c, 0, &features, &num_boxes));
  const ShapeHandle out =
      c->MakeShape({num_boxes, c->MakeDim(pooled), c->MakeDim(pooled), c->Dim(features, 3)});
  c->set_output(0, out);
  c->set_output(1, out);
  return absl::OkStatus();
}

absl::Status RoiWarpGradShape(InferenceContext* c) {
  int crop, pooled;
  TF_RETURN_IF_ERROR(AttrsFromContext(c, &crop, &pooled));
  ShapeHandle features;
  DimensionHandle num_boxes;
  TF_RETURN_IF_ERROR(WarpInputs(c, 1, &features, &num_boxes));
  const ShapeHandle expected =
      c->MakeShape({num_boxes, c->MakeDim(pooled), c->MakeDim(pooled), c->Dim(features, 3)});
  ShapeHandle merged;
  for (int input : {0, 4}) {
    if (!c->Merge(c->input(input), expected, &merged).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          input == 0 ? "grads" : "argmax", " must have shape [R, pooled, pooled, C] = ",
          c->DebugString(expected), ", got shape ", c->DebugString(c->input(input))));
    }
  }
  c->set_output(0, features);
  c->set_output(1, c->MakeShape({num_boxes, c->MakeDim(4)}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("MncRoiWarp")
    .Input("features: T")
    .Input("boxes: float")
    .Input("box_indices: int32")
    .Output("output: T")
    .Output("argmax: uint8")
    .Attr("T: {float, bfloat16, half} = DT_FLOAT")
    .Attr("crop_size: int = 28")
    .Attr("pooled_size: int = 14")
    .Attr("spatial_scale: float = 0.0625")
    .SetShapeFn(RoiWarpShape)
    .Doc(R"doc(
RoI warping (MNC): bilinear crop of each box to crop_size x crop_size, then
max-pool to pooled_size x pooled_size.

features: [B, H, W, C] feature map (float, bfloat16 or half; the CUDA kernels
  take float). 16-bit features are widened exactly, sampled and pooled in
  float, and the output is rounded to T.
boxes: [R, 4] boxes y1, x1, y2, x2 in input-image pixels (feature pixel =
  image pixel * spatial_scale).
box_indices: [R] image of each box, in [0, B).
output: [R, pooled_size, pooled_size, C].
argmax: [R, pooled_size, pooled_size, C] slot (wy * k + wx, k = crop/pooled)
  of each max inside its pooling window; consumed by MncRoiWarpGrad.
)doc");

REGISTER_OP("MncRoiWarpGrad")
    .Input("grads: T")
    .Input("features: T")
    .Input("boxes: float")
    .Input("box_indices: int32")
    .Input("argmax: uint8")
    .Output("grad_features: T")
    .Output("grad_boxes: float")
    .Attr("T: {float, bfloat16, half} = DT_FLOAT")
    .Attr("crop_size: int = 28")
    .Attr("pooled_size: int = 14")
    .Attr("spatial_scale: float = 0.0625")
    .SetShapeFn(RoiWarpGradShape)
    .Doc(R"doc(
Gradient of MncRoiWarp w.r.t. features and boxes (box_indices has none).

grads: [R, pooled_size, pooled_size, C] gradient w.r.t. MncRoiWarp's output.
argmax: MncRoiWarp's second output.
grad_features: [B, H, W, C], accumulated in float and rounded to T once.
grad_boxes: [R, 4], w.r.t. the pixel coordinates y1, x1, y2, x2.
)doc");

}  // namespace mnc_roi_warp
